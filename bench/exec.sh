#!/usr/bin/env bash
# `paddock exec NAME -- /bin/true` against util-linux `nsenter` entering the
# same namespaces of the same running workload, side by side in one
# hyperfine run. A real `paddock daemon` (temp directories, its own
# configuration, as bench/daemon.py does) runs one busybox workload
# (`sleep 1000`, remapped, with a memory limit so it has a cgroup).
# Root only.
#
#   sudo bench/exec.sh [RUNS]          # default 300 runs after 20 warm-ups
#   PADDOCK=/path/to/paddock sudo bench/exec.sh   # a given binary, no build
#
# What nsenter does less than paddock exec (so the comparison flatters it):
# it enters the user, mount, pid, uts, ipc, net and cgroup namespaces and
# the workload's root and working directory, and becomes uid/gid 0 of the
# user namespace, and nothing else: no seccomp filter, no capability drop
# or bounding set, no no_new_privs, no rlimits, no join of the workload's
# cgroup (its memory and pids limits), no environment reset (the caller's
# environment goes in), no descriptor hygiene, no pipes relayed, no daemon
# round trip (no socket, no root check of the peer, no log line).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-300}
WARMUP=20

for t in hyperfine nsenter python3; do
  command -v "$t" >/dev/null || { echo "bench/exec.sh: $t is needed" >&2; exit 1; }
done
BUSYBOX=$(command -v busybox || echo /bin/busybox)
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || { echo "bench/exec.sh: a static busybox is needed (busybox-static)" >&2; exit 1; }
if [ -z "${PADDOCK:-}" ]; then
  PADDOCK=$(packaging/build-release --quiet)
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_BEFORE=$(load)

WORK=$(mktemp -d /tmp/paddock-bench-exec.XXXXXX)
chmod 755 "$WORK"
DAEMON=
cleanup() {
  if [ -n "$DAEMON" ] && kill -0 "$DAEMON" 2>/dev/null; then
    kill -TERM "$DAEMON"
    wait "$DAEMON" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The busybox rootfs, every applet linked.
R=$WORK/rootfs
mkdir -p "$R"/{bin,proc,dev,tmp,sys,etc,root}
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
chmod -R a+rX "$R"

# The daemon's own world: nothing of /etc/paddock or /run/paddock is used.
mkdir -m 755 "$WORK/wl"
cp /etc/passwd /etc/group "$WORK/"
echo "paddock:1000000:131072" > "$WORK/subuid"; cp "$WORK/subuid" "$WORK/subgid"
cat > "$WORK/paddock.toml" <<EOF
workloads = "$WORK/wl"
state_dir = "$WORK/state"
socket = "$WORK/sock"
run_dir = "$WORK/run"
policy_dir = "/nonexistent"
volumes_root = "$WORK/volumes"
[remap]
subuid = "$WORK/subuid"
subgid = "$WORK/subgid"
passwd = "$WORK/passwd"
group = "$WORK/group"
EOF
# A name of its own: cgroups are named after workloads, and other daemons
# (tests, other benchmarks) share the host's.
NAME=bench-exec
cat > "$WORK/wl/.$NAME.tmp" <<EOF
command = ["/bin/sleep", "1000"]
rootfs = { path = "$R" }
[resources]
memory = "64MiB"
EOF
mv "$WORK/wl/.$NAME.tmp" "$WORK/wl/$NAME.toml"

env -u NOTIFY_SOCKET "$PADDOCK" daemon --config "$WORK/paddock.toml" 2> "$WORK/daemon.log" &
DAEMON=$!
S=$WORK/sock
pid=
for _ in $(seq 600); do
  if [ -S "$S" ]; then
    pid=$("$PADDOCK" status --json --socket "$S" 2>/dev/null | python3 -c '
import json, sys
for w in json.load(sys.stdin):
    if w["name"] == sys.argv[1] and w["state"] == "running" and w.get("pid"):
        print(w["pid"])' "$NAME" || true)
    [ -n "$pid" ] && break
  fi
  kill -0 "$DAEMON" || { cat "$WORK/daemon.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$pid" ] || { echo "bench/exec.sh: $NAME never ran" >&2; cat "$WORK/daemon.log" >&2; exit 1; }

EXEC="$PADDOCK exec --socket $S $NAME -- /bin/true"
# -r and -w with no argument: the target's root and working directory.
NSENTER="nsenter -t $pid -U -m -p -u -i -n -C -r -w -- /bin/true"

# Both must work, and must land in the workload's namespaces and ids.
$EXEC
$NSENTER
for which in user mnt pid uts ipc net cgroup; do
  [ "$(readlink /proc/"$pid"/ns/$which)" != "$(readlink /proc/self/ns/$which)" ] || {
    echo "bench/exec.sh: the workload shares the host's $which namespace" >&2; exit 1; }
done
echo "workload $NAME: init pid $pid, uid_map $(tr -s ' ' < /proc/"$pid"/uid_map)"
"$PADDOCK" exec --socket "$S" "$NAME" -- /bin/sh -c 'echo "paddock exec: $(id) $(grep -E "^(CapEff|Seccomp|NoNewPrivs)" /proc/self/status | tr -s "\t\n" "  ")cgroup $(grep memory /proc/self/cgroup)"'
nsenter -t "$pid" -U -m -p -u -i -n -C -r -w -- /bin/sh -c 'echo "nsenter:      $(id) $(grep -E "^(CapEff|Seccomp|NoNewPrivs)" /proc/self/status | tr -s "\t\n" "  ")cgroup $(grep memory /proc/self/cgroup)"'

echo "load before: $LOAD_BEFORE; before hyperfine: $(load)"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/exec.json" --export-markdown "$WORK/exec.md" \
  -n "paddock exec" "$EXEC" -n nsenter "$NSENTER"
LOAD_AFTER=$(load)

echo
cat "$WORK/exec.md"
python3 - "$WORK/exec.json" <<'PY'
import json, statistics, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
p, n = r["paddock exec"], r["nsenter"]
pm, nm = statistics.median(p["times"]), statistics.median(n["times"])
print(f"\npaddock exec / nsenter: mean {p['mean'] / n['mean']:.2f}x "
      f"({p['mean'] * 1e3:.2f} ms / {n['mean'] * 1e3:.2f} ms), "
      f"median {pm / nm:.2f}x ({pm * 1e3:.2f} ms / {nm * 1e3:.2f} ms)")
PY
echo "load after: $LOAD_AFTER"
echo "daemon log: $(grep -Ec 'action="?exec' "$WORK/daemon.log") exec lines, $(grep -Ec ' (ERROR|WARN) ' "$WORK/daemon.log" || true) ERROR/WARN lines"
