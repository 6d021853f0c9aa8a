#!/bin/sh
# Try paddock from this checkout, without installing it or systemd: builds
# it (as you, with your cargo), then runs the daemon in the foreground, as
# root, on the bundled examples. Everything it keeps is under one
# directory (default /tmp/paddock-try; PADDOCK_TRY_DIR to choose): its
# configuration, a root-owned copy of examples/workloads, state, socket,
# logs, and its own subuid/subgid/passwd/group files, so /etc is not
# touched. The `web` example publishes port 8080 on a bridge of its own (it
# needs the CNI plugins: apt-get install containernetworking-plugins).
# Ctrl-C stops the daemon and every workload with it.
#
#   ./try.sh
#   # in another terminal:
#   export PADDOCK_SOCKET=/tmp/paddock-try/paddock.sock
#   sudo -E target/debug/paddock status
set -eu
cd "$(dirname "$0")"
try=${PADDOCK_TRY_DIR:-/tmp/paddock-try}
# The daemon's paths are absolute (it refuses others).
case $try in /*) ;; *) try=$PWD/$try ;; esac
bin=${CARGO_TARGET_DIR:-target}/debug/paddock

if [ "$(id -u)" != 0 ]; then
	cargo build --quiet
	echo "try.sh: built $bin; the daemon needs root (namespaces, cgroups): running it with sudo" >&2
	# ./try.sh, not $0: a relative $0 would be looked up again from here.
	exec sudo PADDOCK_TRY_DIR="$try" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}" ./try.sh "$@"
fi
if [ ! -x "$bin" ]; then
	if ! command -v cargo >/dev/null; then
		echo "try.sh: $bin is not built and root has no cargo: run ./try.sh as yourself (it builds, then uses sudo)" >&2
		exit 1
	fi
	cargo build --quiet
fi

# Run as root on a path anyone could have made first (/tmp): a directory
# that is not root's, or a symlink, would let its owner choose what runs.
if [ -L "$try" ] || { [ -e "$try" ] && [ "$(stat -c %u "$try")" != 0 ]; }; then
	echo "try.sh: $try exists and is not a directory of root's (owner $(stat -c %U "$try" 2>/dev/null)): remove it, or choose another with PADDOCK_TRY_DIR" >&2
	exit 1
fi
mkdir -p "$try/workloads" "$try/networks"
chmod 755 "$try"
# Root's alone: manifests hold secrets (env), which any user could read otherwise.
chmod 700 "$try/workloads"
# The daemon takes only a root-owned workloads directory; a copy of the examples is one.
cp examples/workloads/*.toml "$try/workloads/"
chown -R root:root "$try/workloads"
chmod 644 "$try/workloads/"*.toml
# Id ranges of its own: the daemon adds the `paddock` user's range to these,
# not to /etc. They begin as the host's ranges under other names
# (`host-OWNER`), so the range it picks is no one's on this host: not a
# user's rootless containers', nor an installed paddock's, whose workloads
# would otherwise share host ids with these.
for file in subuid subgid; do
	[ -e "$try/$file" ] || awk -F: 'NF == 3 && $1 !~ /^[ \t]*#/ { sub(/^[ \t]+/, ""); print "host-" $0 }' \
		"/etc/$file" > "$try/$file" 2>/dev/null || : > "$try/$file"
done
[ -e "$try/passwd" ] || cp /etc/passwd "$try/passwd"
[ -e "$try/group" ] || cp /etc/group "$try/group"
cat > "$try/paddock.toml" <<CONF
# Written by try.sh: a daemon that keeps everything under $try.
workloads = "$try/workloads"
state_dir = "$try/state"
run_dir = "$try/run"
socket = "$try/paddock.sock"
policy_dir = "$try/policies"
volumes_root = "$try/volumes"

[remap]
subuid = "$try/subuid"
subgid = "$try/subgid"
passwd = "$try/passwd"
group = "$try/group"

# A bridge and subnet of its own: an installed paddock's (paddock0,
# 10.77.0.0/16) keeps its addresses in its own state directory, so two
# daemons on one bridge would hand out the same address.
[network]
networks_dir = "$try/networks"
bridge = "paddocktry0"
subnet = "10.78.0.0/16"
CONF

cat >&2 <<MSG
try.sh: the daemon runs on a copy of examples/workloads in $try/workloads
try.sh: in another terminal:
    export PADDOCK_SOCKET=$try/paddock.sock
    sudo -E $bin status
    sudo -E $bin logs worker
    curl http://localhost:8080/
try.sh: edit or add manifests in $try/workloads (as root) and watch them apply; Ctrl-C stops the daemon and every workload (its bridge paddocktry0 stays: ip link delete paddocktry0 removes it)
MSG
exec "$bin" daemon --config "$try/paddock.toml"
