#!/usr/bin/env python3
"""Where `paddock run`'s time goes, step by step, from kernel tracepoints.

Runs `paddock run` on the bench/sandbox.sh workload (a busybox root,
/bin/true, a user namespace mapping 0 -> 100000:65536, pid, mount, uts,
ipc and net namespaces) RUNS times under `perf record` with a handful of
system-call tracepoints (a few events per run, so the tracing itself costs
little), and splits each run at them:

  execve(paddock) -> flock(id slice)   process start, arguments, the manifest validated
  flock -> clone                       accounts, id slice, open_tree of the sources
  clone -> pivot_root                  the namespaces made; the init builds the root
  pivot_root -> umount2 returns        the old root detached (waits for an RCU grace period)
  umount2 -> seccomp                   fork of the workload's process, signals reset
  seccomp (all programs)               the filter checked and compiled by the kernel
  seccomp -> execve(workload)          capabilities, ids, no_new_privs
  execve(workload) -> its exit         the workload (/bin/true)
  its exit -> paddock exits            teardown: the init's exit, namespaces freed

Prints a table of medians (ms) and writes nothing else.
Usage: sudo bench/profile.py [PADDOCK] [RUNS]   (default: the release binary, built by
packaging/build-release; 200 runs)
"""
import os, re, shutil, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
EVENTS = ["execve", "flock", "clone", "clone3", "pivot_root", "umount", "seccomp", "exit_group"]

if os.geteuid() != 0:
    sys.exit("bench/profile.py makes sandboxes and reads kernel tracepoints: run it as root")
if not shutil.which("perf"):
    sys.exit("bench/profile.py needs perf: apt-get install linux-perf")

if len(sys.argv) > 1:
    PADDOCK = os.path.abspath(sys.argv[1])
else:  # the binary as shipped (static-pie); packaging/build-release prints its path
    build = [os.path.join(ROOT, "packaging/build-release"), "--quiet"]
    PADDOCK = subprocess.run(build, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()

work = tempfile.mkdtemp(prefix="paddock-profile.")
try:
    rootfs = os.path.join(work, "rootfs")
    for d in ("bin", "proc", "dev", "tmp", "sys"):
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy(shutil.which("busybox") or "/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin/true"))
    subprocess.run(["chmod", "-R", "a+rX", work], check=True)
    for f in ("subuid", "subgid"):
        open(os.path.join(work, f), "w").write("paddock:100000:65536\n")
    for f in ("passwd", "group"):
        shutil.copy(f"/etc/{f}", os.path.join(work, f))
    manifest = os.path.join(work, "bench.toml")
    open(manifest, "w").write(f'command = ["/bin/true"]\nrootfs = {{ path = "{rootfs}" }}\n')
    run = [PADDOCK, "run", "--policy", "privileged", "--policy-dir", os.path.join(work, "none"),
           "--state-dir", os.path.join(work, "state"), "--subuid", os.path.join(work, "subuid"),
           "--subgid", os.path.join(work, "subgid"), "--passwd", os.path.join(work, "passwd"),
           "--group-file", os.path.join(work, "group"), manifest]
    subprocess.run(run, check=True)  # the slice allocated, caches warm
    loop = os.path.join(work, "loop.sh")
    open(loop, "w").write("#!/bin/sh\nfor i in $(seq %d); do %s || exit 1; done\n" % (RUNS, " ".join(run)))
    os.chmod(loop, 0o755)
    events = []
    for e in EVENTS:
        events += ["-e", f"syscalls:sys_enter_{e}", "-e", f"syscalls:sys_exit_{e}"]
    data = os.path.join(work, "perf.data")
    subprocess.run(["perf", "record", "-q", "-a", "-o", data, *events, "--", loop], check=True,
                   stdout=subprocess.DEVNULL)
    script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time,event"],
                            capture_output=True, text=True, check=True).stdout
finally:
    shutil.rmtree(work, ignore_errors=True)

line = re.compile(r"^\s*(\S+)\s+(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):")
runs, current = [], None
for text in script.splitlines():
    m = line.match(text)
    if not m:
        continue
    comm, pid, t, edge, call = m.group(1), int(m.group(2)), float(m.group(3)) * 1e3, m.group(4), m.group(5)
    if call == "execve" and edge == "exit" and comm == os.path.basename(PADDOCK)[:15]:
        current = {"start": t, "paddock": pid}
        runs.append(current)
        continue
    if current is None:
        continue
    key = f"{edge}_{call}"
    if comm == "true" and key == "exit_execve":
        current.setdefault("workload_exec", t)
    elif comm == "true" and key == "enter_exit_group":
        current.setdefault("workload_exit", t)
    elif pid == current["paddock"] and key == "enter_exit_group":
        current.setdefault("end", t)
    elif key == "exit_umount" and "enter_pivot_root" not in current:
        continue
    else:
        current.setdefault(key, t)
        if key == "exit_seccomp":
            current["last_seccomp"] = t

steps = [
    ("process start, arguments, the manifest validated", "start", "enter_flock"),
    ("accounts, id slice, open_tree of the sources", "enter_flock", "enter_clone"),
    ("clone: the namespaces made; the init builds the root", "enter_clone", "enter_pivot_root"),
    ("pivot_root; the old root detached (umount2)", "enter_pivot_root", "exit_umount"),
    ("fork of the workload's process, signals reset", "exit_umount", "enter_seccomp"),
    ("seccomp: the filter loaded (checked and compiled by the kernel)", "enter_seccomp", "last_seccomp"),
    ("capabilities, ids, no_new_privs, execve", "last_seccomp", "workload_exec"),
    ("the workload (/bin/true)", "workload_exec", "workload_exit"),
    ("teardown: the init's exit, namespaces freed, paddock exits", "workload_exit", "end"),
    ("total (the execve of paddock to its exit_group)", "start", "end"),
]
complete = [r for r in runs if all(k in r for _, a, b in steps for k in (a, b))]
if not complete:
    sys.exit(f"no complete run among {len(runs)} traced; is {PADDOCK} the binary that ran?")
print(f"`bench/profile.py` on Linux {os.uname().release}: {len(complete)} runs of `paddock run` "
      f"(busybox root, /bin/true, user, pid, mount, uts, ipc and net namespaces), medians.\n")
print("| step | ms |\n|---|---:|")
for name, a, b in steps:
    print(f"| {name} | {statistics.median(r[b] - r[a] for r in complete):.2f} |")
