#!/usr/bin/env bash
# Where the bytes of a cross-built router binary go: sections of the stripped file, then the
# symbols of the unstripped link (rmqtt.syms, which scripts/cross.sh leaves beside each binary)
# summed by crate and by module, then the largest symbols.
#
# Usage: scripts/size-table.sh [--out DIR] [--targets "mips ..."] [--variants "ssl nossl"]
#                              [--top N] [--depth N]
# DIR is scripts/cross.sh's output (default dist/cross). --top: how many rows of each table
# (default 25). --depth: module path components for rmqtt's own code (default 3, e.g.
# rmqtt::broker::server); other crates get 2 (core::fmt).
#
# A symbol's crate is the first path component of its demangled name; for `<A as B>::f` it is
# A's crate, since that is where the code was written (a trait impl of a std trait for a type
# of ours is ours). Generic code instantiated from our crate is attributed to the crate that
# defines it (`core::slice::sort::...` is core even if only we call it), as cargo-bloat does.
# Names without a `::` are the C library and compiler runtime ([C]). Bytes no symbol covers
# (string literals, alignment, ELF headers, .eh_frame) are shown as the difference between
# the stripped file and the symbol sum.
#
# Compare two runs with `diff`: each table is sorted by size, one row per name.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist/cross
targets="mips"
variants="ssl nossl"
top=25
depth=3
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out="$2"; shift ;;
    --targets) targets="$2"; shift ;;
    --variants) variants="$2"; shift ;;
    --top) top="$2"; shift ;;
    --depth) depth="$2"; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "size-table.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

tool() {
    case "$1" in
    mips) echo "mips-linux-gnu-$2" ;;
    mipsel) echo "mipsel-linux-gnu-$2" ;;
    armv7) echo "arm-linux-gnueabihf-$2" ;;
    aarch64) echo "aarch64-linux-gnu-$2" ;;
    *) echo "$2" ;;
    esac
}

status=0
for t in $targets; do
    for v in $variants; do
        bin="$out/$t/$v/rmqtt"
        syms="$out/$t/$v/rmqtt.syms"
        if [ ! -f "$bin" ] || [ ! -f "$syms" ]; then
            echo "size-table: $bin or $syms missing (build with scripts/cross.sh)" >&2
            status=1
            continue
        fi
        echo "=== $t $v: $(stat -c %s "$bin") bytes stripped, $(xz -9 -c "$bin" | wc -c) xz -9"
        "$(tool "$t" size)" -A "$bin" |
            awk 'NR > 2 && $2 > 0 && $1 != "Total" { printf "  section %-22s %9d\n", $1, $2 }'
        "$(tool "$t" nm)" -S --size-sort -C "$syms" |
            python3 -c '
import re
import sys
from collections import Counter

# The C and assembly of ring (its own prefix, or the static names of its fiat/curve25519/
# nistz code); every other name without `::` is the C library or the compiler runtime.
RING_C = re.compile(
    r"^(ring_core_|fiat_|fe_|ge_|x25519|sc_|p256|p384|nistz|ecp_|gfp|bn_|limbs?_|LIMBS?_"
    r"|CRYPTO_|OPENSSL_|aes_|vpaes|ChaCha|chacha|poly1305|gcm_|k25519|d2?$|sqrt_m1|Bi$"
    r"|felem|point_|elem_|scalar_|table$|ones$|add_|sub_|mul_|sqr_)"
)
PRIMITIVES = {"u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128",
              "isize", "f32", "f64", "bool", "char", "str"}

top, depth, file_size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def path_of(name):
    """The defining path of a demangled symbol, without generics and hash."""
    s = name
    while s.startswith("<"):
        s = s[1:]
    if s.startswith("&"):
        s = s.lstrip("&").removeprefix("mut ")
    if s.startswith("dyn "):
        s = s[4:]
    out, level = [], 0
    for ch in s:
        if ch in "<([":
            level += 1
        elif ch in ">)]":
            level -= 1
            if level < 0:
                break
        elif level == 0 and ch == " ":
            break
        if level == 0 and ch not in ">)]":
            out.append(ch)
    def is_hash(p):
        return len(p) == 17 and p[0] == "h" and all(c in "0123456789abcdef" for c in p[1:])
    return [p for p in "".join(out).split("::") if p and not is_hash(p)]

crates, modules, symbols = Counter(), Counter(), []
total = 0
seen = set()
for line in sys.stdin:
    f = line.split(None, 3)
    if len(f) < 4 or f[2] in "bBuUwWvV":  # .bss is not in the file
        continue
    if f[0] in seen:  # an alias: the libc zig builds names some functions twice
        continue
    seen.add(f[0])
    size = int(f[1], 16)
    name = f[3].strip()
    total += size
    parts = path_of(name) if "::" in name else []
    if not parts:
        crate = "ring [C]" if RING_C.match(name) else "libc [C]"
        module = crate
    else:
        crate = parts[0]
        if crate in PRIMITIVES:
            crate = "core"
            parts = ["core", *parts]
        keep = depth if crate == "rmqtt" else 2
        module = "::".join(parts[: min(keep, max(1, len(parts) - 1))])
    crates[crate] += size
    modules[module] += size
    symbols.append((size, name))

def table(title, counter):
    print(f"  -- by {title} (top {top} of {len(counter)})")
    for k, n in counter.most_common(top):
        print(f"  {n:9d} {100 * n / max(total, 1):5.1f}%  {k}")

print(f"  symbols: {total} bytes; not covered by a symbol: {file_size - total} bytes")
table("crate", crates)
table("module", modules)
print(f"  -- largest symbols (top {top})")
for n, name in sorted(symbols, reverse=True)[:top]:
    print(f"  {n:9d}  {name[:150]}")
' "$top" "$depth" "$(stat -c %s "$bin")"
    done
done
exit "$status"
