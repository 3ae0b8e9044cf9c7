#!/usr/bin/env bash
# Packs an OpenWrt .ipk of rmqtt without the OpenWrt SDK, for users who sideload:
#   scripts/ipk.sh ARCH BINARY OUTDIR      e.g. scripts/ipk.sh mips_24kc dist/cross/mips/ssl/rmqtt dist
# ARCH is the package architecture opkg expects (`opkg print-architecture`). The layout is
# what OpenWrt's scripts/ipkg-build makes: a gzip'd tar (not ar) of ./debian-binary,
# ./data.tar.gz and ./control.tar.gz, numeric owners, `gzip -n`.
# Environment: IPK_NAME (default rmqtt), IPK_RELEASE (default 1), SOURCE_DATE_EPOCH.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 ARCH BINARY OUTDIR" >&2
    exit 2
fi
arch=$1
binary=$2
outdir=$3
top="$(cd "$(dirname "$0")/.." && pwd)"
name="${IPK_NAME:-rmqtt}"
release="${IPK_RELEASE:-1}"
version="$(sed -n 's/^version *= *"\([0-9][0-9.]*\)".*/\1/p' "$top/Cargo.toml" | head -1)-$release"
mtime="${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}"

case "$arch" in
*[!A-Za-z0-9_.-]* | "") echo "ipk.sh: bad ARCH '$arch'" >&2; exit 2 ;;
esac
[ -f "$binary" ] || { echo "ipk.sh: no binary at $binary" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data="$work/data"
ctrl="$work/control"
mkdir -p "$data/usr/bin" "$data/etc/init.d" "$data/etc/config" "$data/etc/rmqtt" \
    "$data/usr/share/doc/rmqtt" "$data/lib/upgrade/keep.d" "$ctrl"

install -m 0755 "$binary" "$data/usr/bin/rmqtt"
for applet in rmqtt_pub rmqtt_sub rmqtt_rr rmqtt_passwd; do
    ln -s rmqtt "$data/usr/bin/$applet"
done
install -m 0755 "$top/files/etc/init.d/rmqtt" "$data/etc/init.d/rmqtt"
install -m 0600 "$top/files/etc/config/rmqtt" "$data/etc/config/rmqtt"
install -m 0600 "$top/files/etc/rmqtt/rmqtt.conf" "$data/etc/rmqtt/rmqtt.conf"
install -m 0600 "$top/files/etc/rmqtt/passwd" "$data/etc/rmqtt/passwd"
install -m 0600 "$top/files/etc/rmqtt/acl" "$data/etc/rmqtt/acl"
# sysupgrade keeps what the owner adds there (certificates, keys).
install -m 0644 "$top/files/lib/upgrade/keep.d/rmqtt" "$data/lib/upgrade/keep.d/rmqtt"
install -m 0644 "$top/openwrt/README.md" "$data/usr/share/doc/rmqtt/README.md"

installed_size=$(find "$data" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')

cat >"$ctrl/control" <<EOF
Package: $name
Version: $version
Depends: libc
Provides: rmqtt
Source: rmqtt
License: EPL-2.0 OR BSD-3-Clause
Section: net
Architecture: $arch
Installed-Size: $installed_size
Description: Small MQTT 3.1/3.1.1/5.0 broker with mosquitto-compatible clients.
 One static binary: rmqtt (broker), rmqtt_pub, rmqtt_sub, rmqtt_rr, rmqtt_passwd. Reads
 /etc/config/rmqtt (mosquitto's UCI names) or a mosquitto.conf.
EOF

cat >"$ctrl/conffiles" <<'EOF'
/etc/config/rmqtt
/etc/rmqtt/rmqtt.conf
/etc/rmqtt/passwd
/etc/rmqtt/acl
EOF

# Maintainer scripts. opkg sets PKG_ROOT to the root it installs into ("/" normally) and,
# when building an image offline, IPKG_INSTROOT: then nothing may be started.
cat >"$ctrl/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
root="${IPKG_INSTROOT:-${PKG_ROOT%/}}"

# The service user, as OpenWrt's user_add makes it: first free id from 200.
free_id() {
	id=200
	while cut -d: -f3 "$1" 2>/dev/null | grep -qx "$id"; do id=$((id + 1)); done
	echo "$id"
}
if ! grep -q '^rmqtt:' "$root/etc/group" 2>/dev/null; then
	echo "rmqtt:x:$(free_id "$root/etc/group"):" >>"$root/etc/group"
fi
gid=$(grep '^rmqtt:' "$root/etc/group" | cut -d: -f3)
if ! grep -q '^rmqtt:' "$root/etc/passwd" 2>/dev/null; then
	echo "rmqtt:x:$(free_id "$root/etc/passwd"):$gid:rmqtt:/var/run/rmqtt:/bin/false" >>"$root/etc/passwd"
	[ -f "$root/etc/shadow" ] && echo "rmqtt:*:0:0:99999:7:::" >>"$root/etc/shadow"
fi

# The broker, as rmqtt, reads its files through the group; nobody else reads them. The init
# script keeps this up to date for every file the configuration names.
chgrp "$gid" "$root/etc/rmqtt" "$root/etc/rmqtt/passwd" "$root/etc/rmqtt/acl" 2>/dev/null
chmod 0750 "$root/etc/rmqtt"
chmod 0640 "$root/etc/rmqtt/passwd" "$root/etc/rmqtt/acl"

/bin/sh "$root/etc/rc.common" "$root/etc/init.d/rmqtt" enable
[ -n "${IPKG_INSTROOT}" ] && exit 0
/bin/sh "$root/etc/rc.common" "$root/etc/init.d/rmqtt" start
exit 0
EOF

cat >"$ctrl/prerm" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
root="${IPKG_INSTROOT:-${PKG_ROOT%/}}"
if [ -z "${IPKG_INSTROOT}" ]; then
	/bin/sh "$root/etc/rc.common" "$root/etc/init.d/rmqtt" stop
fi
/bin/sh "$root/etc/rc.common" "$root/etc/init.d/rmqtt" disable
exit 0
EOF
chmod 0755 "$ctrl/postinst" "$ctrl/prerm"
chmod 0644 "$ctrl/control" "$ctrl/conffiles"

pack() { # DIR OUT: reproducible gzip'd tar of DIR's contents as ./...
    tar --sort=name --mtime="@$mtime" --numeric-owner --owner=0 --group=0 \
        -C "$1" -cf - . | gzip -n -9 >"$2"
}
pack "$data" "$work/data.tar.gz"
pack "$ctrl" "$work/control.tar.gz"
echo "2.0" >"$work/debian-binary"

mkdir -p "$outdir"
out="$outdir/${name}_${version}_${arch}.ipk"
tar --mtime="@$mtime" --numeric-owner --owner=0 --group=0 -C "$work" \
    -cf - ./debian-binary ./data.tar.gz ./control.tar.gz | gzip -n -9 >"$out"
echo "$out"
