#!/bin/sh
# Builds (once) the Debian tree that tests/systemd.rs boots with systemd as
# PID 1 in a container: debootstrap minbase with systemd, dbus and
# busybox-static, from the mirror apt already uses. The tree is cached
# (default /var/cache/paddock-tests/bookworm) and reused while it exists.
#
#   tests/systemd/tree.sh [DIR]
set -eu
tree=${1:-/var/cache/paddock-tests/bookworm}
if [ -x "$tree/lib/systemd/systemd" ] && [ -e "$tree/.complete" ]; then
	exit 0
fi
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
if [ -z "$mirror" ]; then
	mirror=$(awk '/^deb / { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
fi
mirror=${mirror:-http://deb.debian.org/debian}
rm -rf "$tree"
mkdir -p "$(dirname "$tree")"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,busybox-static bookworm "$tree" "$mirror" >/dev/null
# No getty to wait for, no network to configure: the container boots in seconds.
ln -sf /dev/null "$tree/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$tree/etc/systemd/system/systemd-networkd-wait-online.service"
echo paddock-test > "$tree/etc/hostname"
touch "$tree/.complete"
