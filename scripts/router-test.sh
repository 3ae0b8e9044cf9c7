#!/usr/bin/env bash
# The router-in-a-box test (tests/router.rs) on a router build: packs the .ipk of a cross-built
# binary and runs the whole test with it, the mips binary under qemu-user-static through
# binfmt_misc (registered by the test). Needs root, like the test itself.
#   scripts/router-test.sh [ARCH] [BINARY]   default: mips_24kc dist/cross/mips/ssl/rmqtt
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-mips_24kc}"
binary="${2:-dist/cross/mips/ssl/rmqtt}"
if [ ! -x "$binary" ]; then
    case "$arch" in
    mips_*) scripts/cross.sh --targets mips --variants ssl ;;
    *) echo "router-test: no binary at $binary" >&2; exit 1 ;;
    esac
fi
if ! dpkg-query -W -f='${Status}' qemu-user-static 2>/dev/null | grep -q "install ok installed"; then
    apt_install() { apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@"; }
    apt_install qemu-user-static || { apt-get -o DPkg::Lock::Timeout=600 update && apt_install qemu-user-static; }
fi
scripts/install-deps.sh
RMQTT_REQUIRE_INTEROP=1 RMQTT_ROUTER_ARCH="$arch" RMQTT_ROUTER_BINARY="$(realpath "$binary")" \
    cargo test --test router -- --test-threads 1
