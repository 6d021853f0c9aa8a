#!/usr/bin/env bash
# Sandbox start time: a sandbox that runs /bin/true and exits, with equal
# isolation (a user namespace mapping 0 -> 100000:65536, pid, mount, uts,
# ipc; with and without a network namespace), for paddock run and its
# peers, side by side in one hyperfine run per variant. Writes
# bench/RESULTS.md. Root only; installs what it needs from Debian.
#
#   sudo bench/sandbox.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-200}

need=()
for pair in hyperfine:hyperfine bwrap:bubblewrap runc:runc systemd-nspawn:systemd-container podman:podman crun:crun gcc:gcc newuidmap:uidmap; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The release binary as shipped (static-pie; packaging/build-release prints its path).
PADDOCK=$(packaging/build-release --quiet)

WORK=$(mktemp -d /tmp/paddock-bench.XXXXXX)
cp /etc/subuid "$WORK/subuid.host" 2>/dev/null || : > "$WORK/subuid.host"
cp /etc/subgid "$WORK/subgid.host" 2>/dev/null || : > "$WORK/subgid.host"
cleanup() {
  cp "$WORK/subuid.host" /etc/subuid; cp "$WORK/subgid.host" /etc/subgid
  rm -rf "$WORK"
}
trap cleanup EXIT

# The busybox rootfs every tool gets (nspawn insists on /usr and os-release).
R=$WORK/rootfs
mkdir -p "$R"/{bin,proc,dev,tmp,sys,usr,etc,root}
cp /bin/busybox "$R/bin/busybox"
for a in sh true; do ln -s busybox "$R/bin/$a"; done
touch "$R/etc/os-release" "$R/etc/machine-id"
chmod -R a+rX "$R"; chmod 755 "$WORK"

gcc -O2 -o "$WORK/floor" bench/floor.c

# paddock: its own account files, so the slice is exactly 100000:65536.
echo "paddock:100000:65536" > "$WORK/subuid"; cp "$WORK/subuid" "$WORK/subgid"
cp /etc/passwd "$WORK/passwd"; cp /etc/group "$WORK/group"
# One workload name for both variants: the range holds exactly one slice.
mkdir -p "$WORK/net" "$WORK/hostnet"
printf 'command = ["/bin/true"]\nrootfs = { path = "%s" }\n' "$R" > "$WORK/net/bench.toml"
printf 'command = ["/bin/true"]\nrootfs = { path = "%s" }\n[namespaces]\nnetwork = "host"\n' "$R" > "$WORK/hostnet/bench.toml"
P="$PADDOCK run --policy privileged --policy-dir $WORK/none --state-dir $WORK/state --subuid $WORK/subuid --subgid $WORK/subgid --passwd $WORK/passwd --group-file $WORK/group"

# util-linux unshare maps through newuidmap, which wants root's ranges.
grep -q '^root:100000:65536$' /etc/subuid || echo "root:100000:65536" >> /etc/subuid
grep -q '^root:100000:65536$' /etc/subgid || echo "root:100000:65536" >> /etc/subgid

# runc bundles, with and without a network namespace.
for variant in net nonet; do
  B=$WORK/runc-$variant; mkdir -p "$B"; (cd "$B" && runc spec)
  python3 - "$B/config.json" "$R" "$variant" <<'PY'
import json, sys
path, rootfs, variant = sys.argv[1:]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"].update(args=["/bin/true"], terminal=False)
c["process"].pop("rlimits", None)
ns = [n for n in c["linux"]["namespaces"] if variant == "net" or n["type"] != "network"]
c["linux"]["namespaces"] = ns + [{"type": "user"}]
c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
if variant == "nonet":
    # Without its own network namespace a user namespace cannot mount sysfs (nor cgroupfs under it).
    c["mounts"] = [m for m in c["mounts"] if not m["destination"].startswith("/sys")]
json.dump(c, open(path, "w"))
PY
done

declare -A CMD_net CMD_nonet
CMD_net[paddock]="$P $WORK/net/bench.toml"
CMD_nonet[paddock]="$P $WORK/hostnet/bench.toml"
CMD_net[floor]="$WORK/floor -n $R /bin/true"
CMD_nonet[floor]="$WORK/floor $R /bin/true"
U="unshare --user --map-users=100000,0,65536 --map-groups=100000,0,65536 --pid --fork --mount --uts --ipc --root=$R"
CMD_net[unshare]="$U --net /bin/true"
CMD_nonet[unshare]="$U /bin/true"
BW="bwrap --unshare-user --uid 0 --gid 0 --unshare-pid --unshare-uts --unshare-ipc --ro-bind $R / --proc /proc --dev /dev"
CMD_net[bwrap]="$BW --unshare-net /bin/true"
CMD_nonet[bwrap]="$BW /bin/true"
CMD_net[runc]="runc run -b $WORK/runc-net bench-net"
CMD_nonet[runc]="runc run -b $WORK/runc-nonet bench-nonet"
NS="systemd-nspawn -q -D $R --register=no --keep-unit --private-users=100000:65536 --private-users-ownership=off"
CMD_net[systemd-nspawn]="$NS --private-network /bin/true"
CMD_nonet[systemd-nspawn]="$NS /bin/true"
PD="podman run --rm --rootfs $R --uidmap 0:100000:65536 --gidmap 0:100000:65536"
CMD_net[podman]="$PD --network none /bin/true"
CMD_nonet[podman]="$PD --network host /bin/true"
TOOLS=(paddock floor unshare bwrap runc systemd-nspawn podman)

NOTES=$WORK/notes; : > "$NOTES"
for variant in net nonet; do
  declare -n cmds="CMD_$variant"
  args=()
  for t in "${TOOLS[@]}"; do
    if out=$(${cmds[$t]} 2>&1); then
      args+=(-n "$t" "${cmds[$t]}")
    elif [ "$t" = systemd-nspawn ] && grep -q "Attempted to remove disk file system" <<<"$out"; then
      # Its payload ran; only its clean-up of /run/systemd/nspawn/propagate
      # fails where /run is not a tmpfs. Timed with failures ignored.
      echo "- $variant: systemd-nspawn exits 1 after its payload here (\`$(tail -1 <<<"$out")\`); timed with hyperfine -i." >> "$NOTES"
      args+=(-n "$t" "${cmds[$t]}")
    else
      echo "- $variant: $t could not run here: \`$(tail -1 <<<"$out" | cut -c1-200)\`" >> "$NOTES"
    fi
  done
  hyperfine -N -i --warmup 10 --runs "$RUNS" --export-json "$WORK/$variant.json" "${args[@]}"
  # The first target's peers again, interleaved (see bench/interleave.py).
  il=()
  for t in paddock floor unshare bwrap; do
    if printf '%s\n' "${args[@]}" | grep -qx -- "$t"; then il+=("$t=${cmds[$t]}"); fi
  done
  echo "interleaved: ${#il[@]} tools, $RUNS rounds"
  python3 bench/interleave.py "$RUNS" "$WORK/$variant-interleaved.json" "${il[@]}"
done

python3 - "$WORK" "$NOTES" "$RUNS" > bench/RESULTS.md <<'PY'
import json, os, platform, statistics, subprocess, sys
work, notes, runs = sys.argv[1:]
def table(variant, title):
    results = json.load(open(f"{work}/{variant}.json"))["results"]
    med = {r["command"]: statistics.median(r["times"]) * 1000 for r in results}
    base = med["paddock"]
    rows = [f"### {title}", "", "| tool | median (ms) | ratio to paddock |", "|---|---:|---:|"]
    for name, m in sorted(med.items(), key=lambda kv: kv[1]):
        rows.append(f"| {name} | {m:.2f} | {m / base:.2f} |")
    return "\n".join(rows) + "\n"
kernel = platform.release()
cpus = os.cpu_count()
print(f"""# Sandbox start time

`bench/sandbox.sh` on Linux {kernel}, {cpus} CPUs: a busybox rootfs, `/bin/true`,
a user namespace mapping 0 -> 100000:65536 plus pid, mount, uts and ipc
namespaces; {runs} runs each after 10 warm-ups (`hyperfine -N`), all tools in
one hyperfine run per variant. A ratio above 1 is slower than paddock.

paddock does more than the tools that are faster: it validates the manifest
against the schema and policy, looks up and persists the id slice, mounts a fresh /proc,
/dev, /tmp and /sys (this rootfs has every mount point, so its read-only
root is a read-only bind, as bwrap's, not an overlay), loads seccomp, cuts capabilities, and runs its own init as PID 1 (in the
clone child: `paddock run` is one thread). `unshare` and `floor` do none
of it (unshare only chroots); bwrap maps only uid 0 (not a 65536-id range),
and mounts no /sys or /tmp. This manifest asks for no limits, so on this cgroup-v1 host
no cgroup is made (see "Where the time goes").
""")
print(table("net", "With a network namespace (lo only)"))
print(table("nonet", "Without a network namespace"))
print("""### The same, interleaved

hyperfine runs one tool's {runs} runs, then the next tool's. The kernel
frees network namespaces later, in batches, on its own threads, so what
a tool's block pays for them depends on what ran before it: the same
tool's network namespace (its median with one, less its median without)
has cost 0.1 ms in one run of this bench and 1.4 ms in another. Below,
paddock and the tools it is measured against run once each per round,
in a shuffled order, {runs} rounds after 10 warm-up rounds
(`bench/interleave.py`; spawned from Python, so each figure holds the
same few hundred microseconds of spawning more than hyperfine's).
""".format(runs=runs))
print(table("net-interleaved", "Interleaved, with a network namespace"))
print(table("nonet-interleaved", "Interleaved, without a network namespace"))
print(open("bench/PROFILE.md").read())
n = open(notes).read().strip()
if n:
    print("### Tools that could not be timed as asked\n\n" + n + "\n")
print("## The supervisor\n\nReload and restart latency, and 1000 workloads: `bench/daemon.py`, "
      "in [RESULTS-daemon.md](RESULTS-daemon.md).")
PY
cat bench/RESULTS.md
