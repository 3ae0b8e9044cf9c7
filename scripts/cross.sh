#!/usr/bin/env bash
# Static musl release builds of rmqtt for the router CPUs OpenWrt runs on, made on a Debian 12
# x86_64 machine with only Debian packages, PyPI and crates.io (no rustup targets):
# Debian's rustc-web + rust-web-src give `-Zbuild-std`, zig (PyPI `ziglang`) links through
# cargo-zigbuild.
#
# Usage: scripts/cross.sh [--no-install] [--targets "mips mipsel armv7 aarch64"]
#                         [--variants "ssl nossl"] [--out DIR]
# Binaries land in DIR/<target>/<variant>/rmqtt (default DIR: dist/cross), stripped, with the
# unstripped link beside it as rmqtt.syms (for scripts/size-table.sh); a size table (stripped and
# xz -9 bytes) is printed and written to DIR/sizes.txt. Variants: `ssl` is the default feature set (with TLS
# once the `tls` feature exists), `nossl` is `--no-default-features`. Without a `tls` feature in
# Cargo.toml the two would be the same binary, so only `default` is built.
#
# Environment: CARGO_TARGET_DIR (default /tmp/target-cross), CROSS_BUILD_TIMEOUT seconds per
# build (default 1200). CROSS_SIZE_OPT=1 (the default) builds std with immediate-abort panics and
# no location details, Debug derives that print only names, and strips the unwind tables: a
# router's flash is 8-16 MB, and this takes a fifth off the TLS binary and more than a quarter
# off nossl. The price is that a panic (none should be reachable from input) aborts without a
# message; CROSS_SIZE_OPT=0 keeps the message for debugging.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
targets="mips mipsel armv7 aarch64"
variants=""
out=dist/cross
while [ $# -gt 0 ]; do
    case "$1" in
    --no-install) install=0 ;;
    --targets) targets="$2"; shift ;;
    --variants) variants="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "cross.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$variants" ]; then
    if grep -Eq '^[[:space:]]*tls[[:space:]]*=' Cargo.toml; then
        variants="ssl nossl"
    else
        variants="default"
    fi
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-cross}"
timeout_s="${CROSS_BUILD_TIMEOUT:-1200}"

have_tools() {
    [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] &&
        [ -d /usr/lib/rustlib/src/rust/library ] &&
        command -v qemu-mips >/dev/null && command -v cargo-zigbuild >/dev/null &&
        python3 -c 'import ziglang' 2>/dev/null
}

install_tools() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        rustc-web cargo-web rust-web-src qemu-user binutils-multiarch \
        gcc-mips-linux-gnu gcc-mipsel-linux-gnu gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu \
        python3-pip
    # Debian's own python refuses global installs (PEP 668); a pyenv python does not.
    python3 -m pip install ziglang cargo-zigbuild ||
        python3 -m pip install --break-system-packages ziglang cargo-zigbuild
    hash -r
}

if ! have_tools; then
    if [ "$install" -eq 1 ]; then
        install_tools
    fi
    have_tools || { echo "cross.sh: cross tools missing (run without --no-install)" >&2; exit 1; }
fi

# Debian's rustc has the std sources that match it exactly; a rustup toolchain first in PATH
# would not, so Debian's comes first.
export PATH="/usr/bin:$PATH"
export RUSTC_BOOTSTRAP=1

triple() {
    case "$1" in
    mips) echo mips-unknown-linux-musl ;;
    mipsel) echo mipsel-unknown-linux-musl ;;
    armv7) echo armv7-unknown-linux-musleabihf ;;
    aarch64) echo aarch64-unknown-linux-musl ;;
    *) echo "cross.sh: unknown target $1 (mips, mipsel, armv7, aarch64)" >&2; return 1 ;;
    esac
}

strip_tool() {
    case "$1" in
    mips) echo mips-linux-gnu-strip ;;
    mipsel) echo mipsel-linux-gnu-strip ;;
    armv7) echo arm-linux-gnueabihf-strip ;;
    aarch64) echo aarch64-linux-gnu-strip ;;
    esac
}

rustflags() {
    # Panics abort, so unwind tables are dead weight; OpenWrt's kernels use 4 KB pages, so
    # 64 KB segment alignment is padding in the file. Both work on stable rustc (the feed
    # build in openwrt/Makefile passes the same).
    local common="-C force-unwind-tables=no -C link-arg=-Wl,-z,max-page-size=4096"
    case "$1" in
    # The default static-PIE binary dies with SIGSEGV at the first thread-local access on MIPS.
    mips | mipsel) echo "$common -C relocation-model=static" ;;
    # zig provides the C runtime objects; Rust's self-contained crt1.o is not shipped here.
    armv7 | aarch64) echo "$common -C link-self-contained=no" ;;
    esac
}

mkdir -p "$out"
log="$out/build.log"
: >"$log"
rows=()
status=0
for t in $targets; do
    tr=$(triple "$t")
    for v in $variants; do
        feat=()
        [ "$v" = nossl ] && feat=(--no-default-features)
        flags="$(rustflags "$t")"
        zflags=(-Zbuild-std=std,panic_abort)
        if [ "${CROSS_SIZE_OPT:-1}" = 1 ]; then
            # std's smaller variants of sorting, formatting and the like.
            stdfeat=optimize_for_size
            # Newer std sources refuse the old feature and want the panic strategy instead.
            if grep -q 'now a real panic strategy' \
                /usr/lib/rustlib/src/rust/library/core/src/panicking.rs 2>/dev/null; then
                flags="$flags -Zunstable-options -Cpanic=immediate-abort"
            else
                stdfeat="$stdfeat,panic_immediate_abort"
            fi
            # `#[derive(Debug)]` prints only the type or variant name: nothing of ours shows
            # Debug output, and rustls's error texts that do keep the variant
            # ("invalid peer certificate: UnknownIssuer").
            flags="$flags -Zlocation-detail=none -Zfmt-debug=shallow"
            zflags+=("-Zbuild-std-features=$stdfeat")
        fi
        echo "=== $t ($tr) $v: cargo zigbuild ${feat[*]:-}" | tee -a "$log"
        start=$(date +%s)
        # Cargo's own strip is off so that the symbols stay for the size table; the strip
        # below removes them (and more).
        if CARGO_PROFILE_RELEASE_STRIP=false RUSTFLAGS="$flags" timeout "$timeout_s" cargo zigbuild --release --target "$tr" \
            "${zflags[@]}" "${feat[@]}" --bin rmqtt >>"$log" 2>&1; then
            dir="$out/$t/$v"
            mkdir -p "$dir"
            cp "$CARGO_TARGET_DIR/$tr/release/rmqtt" "$dir/rmqtt.syms"
            cp "$dir/rmqtt.syms" "$dir/rmqtt"
            # .pdr (MIPS procedure descriptors) is never loaded; binutils' strip keeps it.
            # With immediate-abort panics nothing unwinds or prints a backtrace, so the unwind
            # tables the C objects still bring (12 KB on mips) go too.
            sections=(-R .pdr -R .comment)
            [ "${CROSS_SIZE_OPT:-1}" = 1 ] && sections+=(-R .eh_frame -R .eh_frame_hdr)
            "$(strip_tool "$t")" "${sections[@]}" "$dir/rmqtt" 2>/dev/null || true
            size=$(stat -c %s "$dir/rmqtt")
            # What squashfs stores is compressed; xz -9 is near what OpenWrt's mksquashfs gives.
            xzs=$(xz -9 -c "$dir/rmqtt" | wc -c)
            rows+=("$(printf '%-8s %-32s %-8s %10s %8s %9s %5ss' "$t" "$tr" "$v" "$size" \
                "$((size / 1024))K" "$xzs" "$(($(date +%s) - start))")")
        else
            status=1
            rows+=("$(printf '%-8s %-32s %-8s %10s' "$t" "$tr" "$v" FAILED)")
            tail -20 "$log" >&2
        fi
    done
done

{
    printf '%-8s %-32s %-8s %10s %8s %9s %6s\n' target triple variant bytes size xz-9 time
    printf '%s\n' "${rows[@]}"
} | tee "$out/sizes.txt"
exit "$status"
