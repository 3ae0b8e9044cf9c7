#!/usr/bin/env bash
# Smoke test of the cross-built router binaries under qemu-user: per target and variant the
# broker starts on a loopback port, rmqtt_sub and rmqtt_pub (the same binary through
# symlinks, also under qemu) pass a QoS 2 message and a retained message.
#
# Usage: scripts/cross-test.sh [--no-build] [--targets "..."] [--out DIR] [cross.sh options]
# Builds first with scripts/cross.sh (which installs what it needs) unless --no-build.
# Every wait is bounded; a run takes a few seconds per binary after the builds.
# Each binary is also held to its line in scripts/size-budget.txt: more than 2 % over fails.
# CROSS_TEST_HOST_CLIENTS=1 uses the host's mosquitto_pub/sub instead of the applets
# (for trying a broker whose applets are not there yet); the table says which were used.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
out=dist/cross
targets="mips mipsel armv7 aarch64"
pass=()
while [ $# -gt 0 ]; do
    case "$1" in
    --no-build) build=0 ;;
    --targets) targets="$2"; pass+=("$1" "$2"); shift ;;
    --out) out="$2"; pass+=("$1" "$2"); shift ;;
    *) pass+=("$1") ;;
    esac
    shift
done

if [ "$build" -eq 1 ]; then
    scripts/cross.sh "${pass[@]}" || echo "cross-test: some builds failed; testing the rest" >&2
fi

qemu_for() {
    case "$1" in
    mips) echo "qemu-mips -cpu 24Kc" ;;
    mipsel) echo "qemu-mipsel -cpu 24Kc" ;;
    armv7) echo "qemu-arm" ;;
    aarch64) echo "qemu-aarch64" ;;
    esac
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for FILE PATTERN SECONDS: true once FILE contains PATTERN.
wait_for() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# smoke TARGET VARIANT BINARY: prints "ok" / "FAIL: why" as the last line.
smoke() {
    local t=$1 bin=$3 q dir port broker_pid sub_pid i pubc subc clients=applets
    q=$(qemu_for "$t")
    dir=$(mktemp -d)
    for a in rmqtt rmqtt_pub rmqtt_sub; do ln -s "$(readlink -f "$bin")" "$dir/$a"; done
    pubc="$q $dir/rmqtt_pub"
    subc="$q $dir/rmqtt_sub"
    if [ "${CROSS_TEST_HOST_CLIENTS:-0}" = 1 ]; then
        pubc=mosquitto_pub subc="stdbuf -oL mosquitto_sub" clients=host
    fi
    port=$(free_port)
    timeout 120 $q "$dir/rmqtt" -p "$port" >"$dir/broker.log" 2>&1 &
    broker_pid=$!
    for ((i = 0; i < 200; i++)); do port_open "$port" && break; sleep 0.1; done
    local result="ok ($clients)"
    if ! port_open "$port"; then
        result="FAIL: broker did not listen: $(tail -2 "$dir/broker.log" | tr '\n' ' ')"
    else
        # QoS 2: subscribe, wait for the SUBACK, publish, expect exactly the payload.
        timeout 30 $subc -h 127.0.0.1 -p "$port" -d -q 2 -C 1 -t cross/qos2 >"$dir/sub.out" 2>&1 &
        sub_pid=$!
        if ! wait_for "$dir/sub.out" SUBACK 20; then
            result="FAIL: no SUBACK: $(tail -2 "$dir/sub.out" | tr '\n' ' ')"
        elif ! timeout 30 $pubc -h 127.0.0.1 -p "$port" -q 2 -t cross/qos2 -m "qos2-from-$t" \
            >"$dir/pub.out" 2>&1; then
            result="FAIL: QoS 2 publish: $(tail -2 "$dir/pub.out" | tr '\n' ' ')"
        elif ! wait "$sub_pid" || ! grep -q "qos2-from-$t" "$dir/sub.out"; then
            result="FAIL: QoS 2 message not received: $(tail -3 "$dir/sub.out" | tr '\n' ' ')"
        # Retained: publish first, a later subscriber gets it.
        elif ! timeout 30 $pubc -h 127.0.0.1 -p "$port" -q 1 -r -t cross/retained \
            -m "kept-on-$t" >"$dir/pub2.out" 2>&1; then
            result="FAIL: retained publish: $(tail -2 "$dir/pub2.out" | tr '\n' ' ')"
        elif ! timeout 30 $subc -h 127.0.0.1 -p "$port" -C 1 -W 20 -v -t cross/retained \
            >"$dir/sub2.out" 2>&1 || ! grep -q "cross/retained kept-on-$t" "$dir/sub2.out"; then
            result="FAIL: retained message not received: $(tail -2 "$dir/sub2.out" | tr '\n' ' ')"
        fi
        kill "$sub_pid" 2>/dev/null || true
    fi
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    rm -rf "$dir"
    echo "$result"
}

# The size budget: bytes per target and variant (scripts/size-budget.txt); a binary more than
# 2 % over its line fails the run, with the size table (scripts/size-table.sh) printed so the
# growth can be found. A target or variant without a line is not checked.
budget_file=scripts/size-budget.txt
budget_for() {
    # The budget is for the default size-optimised build; CROSS_SIZE_OPT=0 is larger by design.
    [ -f "$budget_file" ] && [ "${CROSS_SIZE_OPT:-1}" = 1 ] || return 0
    awk -v t="$1" -v v="$2" '$1 == t && $2 == v { print $3 }' "$budget_file"
}

rows=()
over=()
status=0
found=0
for t in $targets; do
    for bin in "$out/$t"/*/rmqtt; do
        [ -f "$bin" ] || continue
        found=1
        v=$(basename "$(dirname "$bin")")
        r=$(smoke "$t" "$v" "$bin" | tail -1)
        case "$r" in ok*) ;; *) status=1 ;; esac
        size=$(stat -c %s "$bin")
        budget=$(budget_for "$t" "$v")
        vs="-"
        if [ -n "$budget" ]; then
            vs=$(awk -v s="$size" -v b="$budget" 'BEGIN { printf "%+.1f%%", 100 * (s - b) / b }')
            if [ "$size" -gt $((budget + budget / 50)) ]; then
                status=1
                vs="$vs OVER"
                over+=("$t $v")
            fi
        fi
        rows+=("$(printf '%-8s %-8s %10s %8s %10s %-12s %s' "$t" "$v" "$size" \
            "$((size / 1024))K" "${budget:--}" "$vs" "$r")")
    done
done
[ "$found" -eq 1 ] || { echo "cross-test: no binaries under $out" >&2; exit 1; }
{
    printf '%-8s %-8s %10s %8s %10s %-12s %s\n' target variant bytes size budget "vs budget" \
        "qemu smoke test"
    printf '%s\n' "${rows[@]}"
} | tee "$out/cross-test.txt"
for tv in "${over[@]}"; do
    read -r bt bv <<<"$tv"
    echo "cross-test: $bt $bv is more than 2 % over $budget_file; where the bytes go:" >&2
    scripts/size-table.sh --out "$out" --targets "$bt" --variants "$bv" >&2 || true
done
exit "$status"
