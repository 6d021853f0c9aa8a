#!/bin/sh
# Installs paddock from this checkout: the binary, the systemd unit, the
# tmpfiles.d entry, a default configuration, the policies, the schema, the
# examples, man pages, shell completions, and the directories the daemon
# needs. The layout is the Debian package's (packaging/build-deb); README.md
# lists it with owners and modes.
#
#   ./install.sh                      # as yourself: builds the release binary if needed, then sudo installs
#   DESTDIR=/tmp/root ./install.sh    # stage into a directory instead of /
#   PADDOCK_BIN=path/to/paddock ./install.sh
#
# An existing /etc/paddock/paddock.toml is kept (the new default is put
# beside it as paddock.toml.new when they differ); existing manifests and
# policies are kept.
# Installs and enables nothing in systemd: run
#   systemctl daemon-reload && systemctl enable --now paddock
set -eu
cd "$(dirname "$0")"

destdir=${DESTDIR:-}
# The release binary is packaging/build-release's, at
# TARGET_DIR/TUPLE/release/paddock (TUPLE: the host's, with musl). Without
# rustc (root's PATH under sudo, with a per-user rustup) it is the one such
# directory.
target=${CARGO_TARGET_DIR:-target}
only() {
	if [ $# -gt 1 ]; then
		echo "install.sh: more than one release binary ($*): choose one with PADDOCK_BIN=" >&2
		exit 1
	fi
	echo "$1"
}
if [ -n "${PADDOCK_BIN:-}" ]; then
	bin=$PADDOCK_BIN
elif command -v rustc >/dev/null; then
	bin=$target/$(packaging/build-release --tuple)/release/paddock
else
	bin=$(only "$target"/*-linux-musl*/release/paddock)
fi

# Built as you (your cargo, your target/), installed as root: run as
# yourself, it builds and then asks sudo to install.
if [ ! -x "$bin" ]; then
	if [ "$(id -u)" = 0 ] && ! command -v cargo >/dev/null; then
		echo "install.sh: $bin is not built and root has no cargo: run ./install.sh as yourself (it builds with your cargo, then uses sudo), or build first: packaging/build-release && sudo ./install.sh" >&2
		exit 1
	fi
	echo "install.sh: $bin is missing; building it (packaging/build-release)" >&2
	bin=$(packaging/build-release)
fi
if [ "$(id -u)" != 0 ]; then
	if [ -n "$destdir" ] || ! command -v sudo >/dev/null; then
		echo "install.sh: run as root: everything is installed owned by root (the daemon refuses a workloads directory that is not)" >&2
		exit 1
	fi
	echo "install.sh: installing as root (sudo)" >&2
	# ./install.sh, not $0: a relative $0 would be looked up again from here.
	exec sudo PADDOCK_BIN="$bin" ./install.sh "$@"
fi

generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
"$bin" __generate "$generated" >/dev/null

# file SRC DEST MODE: a root-owned file (DEST is a path, not a directory).
file() {
	install -D -o root -g root -m "$3" "$1" "$destdir$2"
}
# dir DEST MODE: a root-owned directory; an existing one keeps its contents.
dir() {
	install -d -o root -g root -m "$2" "$destdir$1"
}

file "$bin" /usr/bin/paddock 0755
file packaging/paddock.service /usr/lib/systemd/system/paddock.service 0644
file packaging/tmpfiles.d/paddock.conf /usr/lib/tmpfiles.d/paddock.conf 0644

dir /etc/paddock 0755
if [ -e "$destdir/etc/paddock/paddock.toml" ]; then
	if cmp -s packaging/paddock.toml "$destdir/etc/paddock/paddock.toml"; then
		# The default, unchanged: nothing to put beside it (and an old .new is stale).
		rm -f "$destdir/etc/paddock/paddock.toml.new"
	else
		file packaging/paddock.toml /etc/paddock/paddock.toml.new 0644
		echo "install.sh: kept /etc/paddock/paddock.toml; the new default is /etc/paddock/paddock.toml.new" >&2
	fi
else
	file packaging/paddock.toml /etc/paddock/paddock.toml 0644
fi
dir /etc/paddock/workloads 0700
dir /etc/paddock/policies 0755
dir /var/lib/paddock 0700

for f in policies/*.json; do
	file "$f" "/usr/share/paddock/policies/$(basename "$f")" 0644
done
file schemas/workload.schema.json /usr/share/paddock/schemas/workload.schema.json 0644
for f in examples/workloads/*.toml; do
	file "$f" "/usr/share/paddock/examples/workloads/$(basename "$f")" 0644
done
file README.md /usr/share/doc/paddock/README.md 0644

for f in "$generated"/man/man1/*.1; do
	file "$f" "/usr/share/man/man1/$(basename "$f")" 0644
done
file "$generated/bash-completion/completions/paddock" /usr/share/bash-completion/completions/paddock 0644
file "$generated/zsh/vendor-completions/_paddock" /usr/share/zsh/vendor-completions/_paddock 0644
file "$generated/fish/vendor_completions.d/paddock.fish" /usr/share/fish/vendor_completions.d/paddock.fish 0644

echo "paddock installed${destdir:+ into $destdir}. Next:"
echo "  systemd-tmpfiles --create paddock.conf"
echo "  systemctl daemon-reload && systemctl enable --now paddock"
echo "  cp /usr/share/paddock/examples/workloads/nightly-report.toml /etc/paddock/workloads/ && paddock status"
