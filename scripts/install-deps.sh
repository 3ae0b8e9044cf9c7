#!/usr/bin/env bash
# Installs the third-party MQTT tools the interoperability tests run against:
# mosquitto (broker), mosquitto_pub/mosquitto_sub, the paho-mqtt Python client, headless
# Chromium and mqtt.js (tests/js, when node and npm are there).
# Idempotent: installs only what is missing. Meant for a fresh Debian 12 machine as root (CI).
# Leaves no system mosquitto service running, so port 1883 stays free.
set -euo pipefail

PAHO_VERSION="2.1.0"
PYTHON="${PYTHON:-python3}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root" >&2; exit 1; }
    SUDO="sudo"
fi

installed=()
apt_updated=0
apt_get() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        apt_get update
        apt_updated=1
    fi
    apt_get install -y --no-install-recommends "$@"
    installed+=("$@")
}
have_pkg() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
if ! command -v mosquitto >/dev/null && ! [ -x /usr/sbin/mosquitto ]; then
    missing+=(mosquitto)
fi
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
    missing+=(mosquitto-clients)
fi
if ! command -v "$PYTHON" >/dev/null; then
    missing+=(python3)
fi
# The distribution's pip is needed only when the python3 in PATH has none of its own.
if ! "$PYTHON" -m pip --version >/dev/null 2>&1 && ! have_pkg python3-pip; then
    missing+=(python3-pip)
fi
# `ip netns`, veth and `tc netem` for the network fault tests (tests/netfaults.rs).
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    missing+=(iproute2)
fi
# busybox as the router's shell and tools in the router-in-a-box test (tests/router.rs).
if ! have_pkg busybox-static; then
    missing+=(busybox-static)
fi
# Headless Chromium for the WebSockets browser test (tests/websockets.rs).
if ! command -v chromium >/dev/null; then
    missing+=(chromium)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# Debian's mosquitto package enables and starts a system broker on port 1883; the tests start
# their own brokers and must not find that port taken.
stop_system_mosquitto() {
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now mosquitto 2>/dev/null || true
    fi
    if [ -x /etc/init.d/mosquitto ]; then
        $SUDO /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null && [ -e /etc/init.d/mosquitto ]; then
        $SUDO update-rc.d mosquitto disable >/dev/null 2>&1 || true
    fi
    # Only the daemon started from the system config; brokers run by tests use their own configs.
    # /proc rather than pgrep: a minimal image may lack procps.
    local dir pid
    for dir in /proc/[0-9]*; do
        [ "$(cat "$dir/comm" 2>/dev/null)" = mosquitto ] || continue
        if tr '\0' ' ' <"$dir/cmdline" 2>/dev/null | grep -q "/etc/mosquitto/mosquitto.conf"; then
            pid="${dir#/proc/}"
            $SUDO kill "$pid" 2>/dev/null || true
            echo "install-deps: stopped the system mosquitto (pid $pid)"
        fi
    done
}
stop_system_mosquitto

paho_ok() {
    "$PYTHON" - <<'PY' 2>/dev/null
import sys
import paho.mqtt
from paho.mqtt.client import CallbackAPIVersion  # noqa: F401  (paho-mqtt 2.x only)
sys.exit(0 if paho.mqtt.__version__.split(".")[0] == "2" else 1)
PY
}
if ! paho_ok; then
    # A python3 of its own (pyenv, /usr/local) that lacks pip gets it from its own ensurepip.
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        "$PYTHON" -m ensurepip --upgrade
    fi
    pip_args=(install --disable-pip-version-check "paho-mqtt==${PAHO_VERSION}")
    # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
    if "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        pip_args+=(--break-system-packages)
    fi
    "$PYTHON" -m pip "${pip_args[@]}"
    paho_ok || { echo "install-deps: paho-mqtt 2.x still not importable" >&2; exit 1; }
    installed+=("paho-mqtt==${PAHO_VERSION} (pip)")
fi

# mqtt.js for the WebSockets tests, pinned by tests/js/package-lock.json.
if command -v node >/dev/null && command -v npm >/dev/null; then
    npm ci --prefix "$(dirname "$0")/../tests/js" --no-audit --no-fund
    installed+=("mqtt.js (npm ci in tests/js)")
fi

if [ "${#installed[@]}" -eq 0 ]; then
    echo "install-deps: nothing to install"
else
    echo "install-deps: installed: ${installed[*]}"
fi
echo "install-deps: mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -n 1)," \
    "paho-mqtt $("$PYTHON" -c 'import paho.mqtt; print(paho.mqtt.__version__)')"
