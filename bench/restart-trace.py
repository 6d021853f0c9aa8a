#!/usr/bin/env python3
"""Where a restart's time goes, step by step: bench/daemon.py's restart
workload under a real `paddock daemon`, and the same command restarted in
the same sandbox by bench/restart-floor.c -s, both traced with the
kernel's tracepoints (ftrace: system calls, exec, exit, fork), for the
traced processes and their children only.

Each restart is cut at the same kernel events in both: the workload's
shell exits; (paddock) its init reports the end, and exits once the
daemon has acknowledged it; the sandbox's last process is reaped (its
mount namespace torn down); the clone of the next sandbox begins and returns;
(paddock) the init has its configuration and forks the workload; the
workload's shell is exec'd. Prints the median of each step over RUNS
restarts (default 20), paddock's beside the floor's. Tracing each system
call slows both, paddock more (it makes more of them): the steps are for
where the time goes, bench/daemon.py's rows for how long it takes.

Pids are compared as ftrace prints them, the initial pid namespace's: run
it there (not in a container with a pid namespace of its own). tracefs's
event-fork option and buffer size are set for the trace and put back.

Usage: sudo [PADDOCK=BINARY] bench/restart-trace.py [RUNS]   (x86_64, root)
"""
import importlib.util, os, platform, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("daemon_bench", os.path.join(ROOT, "bench/daemon.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

# x86_64 system call numbers: the only ones the steps are cut at.
SYSCALLS = {46: "sendmsg", 56: "clone", 57: "fork", 61: "wait4", 435: "clone3"}
CLONES = ("clone", "clone3", "fork")
EVENTS = ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit", "sched:sched_process_exec",
          "sched:sched_process_exit", "sched:sched_process_fork"]
COMMAND = "date +%s%N >> /out/restarts; sleep 0.15; date +%s%N >> /out/exits; exit 1"


class Trace:
    """ftrace's events for `pids` and every process they start."""

    def __init__(self):
        self.dir = next((d for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
                         if os.path.exists(os.path.join(d, "set_event_pid"))), None)
        if self.dir is None:
            raise SystemExit("restart-trace: no tracefs (mount -t tracefs nodev /sys/kernel/tracing)")

    def write(self, name, text):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def read(self, name):
        with open(os.path.join(self.dir, name)) as f:
            return f.read().strip()

    def start(self, pids):
        self.saved = {name: self.read(name) for name in ("buffer_size_kb", "options/event-fork")}
        self.write("tracing_on", "0")
        self.write("trace", "")
        self.write("buffer_size_kb", "65536")
        self.write("set_event", "")
        self.write("options/event-fork", "1")
        self.write("set_event_pid", " ".join(str(p) for p in pids))
        for event in EVENTS:
            # One name per write, appended (a plain write would replace the list).
            fd = os.open(os.path.join(self.dir, "set_event"), os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, event.encode())
            finally:
                os.close(fd)
        self.write("tracing_on", "1")

    def stop(self):
        """The events, as (time in ms, tid, comm, kind, text, duration)."""
        self.write("tracing_on", "0")
        with open(os.path.join(self.dir, "trace")) as f:
            raw = f.read()
        self.write("set_event", "")
        self.write("set_event_pid", "")
        self.write("trace", "")
        for name, value in self.saved.items():
            # buffer_size_kb reads "7 (expanded: 1408)" before first use.
            self.write(name, value.split()[0])
        return parse(raw)


LINE = re.compile(r"\s*(.+)-(\d+)\s+\[\d+\]\s+(?:\S+\s+)?(\d+\.\d+): (\w+): ?(.*)")


def parse(raw):
    events, entered = [], {}
    for line in raw.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        comm, tid, stamp, kind, text = m.groups()
        when = float(stamp) * 1e3
        if kind == "sched_process_exit":
            # A pid reused later must not find this one's system call.
            entered.pop(tid, None)
        if kind == "sys_enter":
            entered[tid] = when
        elif kind == "sys_exit":
            nr, _, ret = text.removeprefix("NR ").partition(" = ")
            began = entered.pop(tid, when)
            name = SYSCALLS.get(int(nr)) if nr.lstrip("-").isdigit() else None
            if name:
                events.append((began, tid, comm.strip(), name, ret, when - began))
        else:
            events.append((when, tid, comm.strip(), kind, text, 0.0))
    events.sort()
    return events


def cut(events, steps):
    """Each restart's boundaries: `steps` is a list of (name, finder), each
    finder given the events and the boundaries so far, returning a time."""
    shells = {e[1] for e in events if e[3] == "sched_process_exec" and "filename=/bin/sh " in e[4]}
    exits = [e for e in events if e[3] == "sched_process_exit" and "comm=sh " in e[4] and e[1] in shells]
    restarts = []
    for exit in exits:
        at = {"exit": exit[0], "pid": exit[1]}
        try:
            for name, find in steps:
                at[name] = find(events, at)
        except StopIteration:
            continue
        restarts.append(at)
    return restarts


def after(events, t, pred):
    return next(e for e in events if e[0] >= t and pred(e))


def reaped_at(events, pid):
    """When a wait4 returned `pid` (only its parent can have reaped it)."""
    ends = [e[0] + e[5] for e in events if e[3] == "wait4" and e[4] == pid]
    if not ends:
        raise StopIteration
    return min(ends)


def forked(events):
    """Each process's parent, from the fork events."""
    parents = {}
    for e in events:
        if e[3] == "sched_process_fork":
            fields = dict(f.split("=", 1) for f in e[4].split() if "=" in f)
            parents[fields.get("child_pid")] = fields.get("pid")
    return parents


def is_pid(ret):
    return ret.isdigit() and int(ret) > 0


def paddock_steps(zygote, parents):
    def report(ev, at):
        # The workload's init is the process that forked its shell.
        if at["pid"] not in parents:
            raise StopIteration
        at["init"] = parents[at["pid"]]
        e = after(ev, at["exit"], lambda e: e[1] == at["init"] and e[3] == "sendmsg")
        return e[0] + e[5]

    def init_exit(ev, at):
        return after(ev, at["report"], lambda e: e[3] == "sched_process_exit" and e[1] == at["init"])[0]

    def reaped(ev, at):
        return reaped_at(ev, at["init"])

    def clone(ev, at):
        e = after(ev, at["reaped"], lambda e: e[1] == zygote and e[3] in CLONES and is_pid(e[4]))
        at["cloned"] = e[0] + e[5]
        at["new init"] = e[4]
        return e[0]

    def fork(ev, at):
        return after(ev, at["clone"], lambda e: e[1] == at["new init"] and e[3] in CLONES and is_pid(e[4]))[0]

    def exec_(ev, at):
        return after(ev, at["fork"], lambda e: e[3] == "sched_process_exec" and "filename=/bin/sh " in e[4])[0]

    return [("report", report), ("init exit", init_exit), ("reaped", reaped), ("clone", clone), ("fork", fork),
            ("exec", exec_)]


def floor_steps(loop_tid):
    def reaped(ev, at):
        return reaped_at(ev, at["pid"])

    def clone(ev, at):
        e = after(ev, at["reaped"], lambda e: e[1] == loop_tid and e[3] in CLONES and is_pid(e[4]))
        at["cloned"] = e[0] + e[5]
        return e[0]

    def exec_(ev, at):
        return after(ev, at["clone"], lambda e: e[3] == "sched_process_exec" and "filename=/bin/sh " in e[4])[0]

    return [("reaped", reaped), ("clone", clone), ("exec", exec_)]


def trace_paddock(trace, paddock, runs):
    work, p, wl, out = bench.world(paddock)
    daemon = bench.start_daemon(paddock, p)
    try:
        mount = f'[[mounts]]\nsource = "{out}"\ntarget = "/out"\nreadonly = false\n'
        with open(os.path.join(wl, ".loop.tmp"), "w") as f:
            f.write(f'command = ["/bin/sh", "-c", "{COMMAND}"]\n'
                    f'[restart]\npolicy = "always"\nbackoff = "0s"\nmax_retries = 0\n{mount}')
        os.rename(os.path.join(wl, ".loop.tmp"), os.path.join(wl, "loop.toml"))
        stamps = os.path.join(out, "restarts")
        count = lambda: len(open(stamps).read().split()) if os.path.exists(stamps) else 0
        deadline = time.time() + 30
        while count() < 2:
            if time.time() > deadline:
                raise SystemExit(f"restart-trace: the workload never started; see {p('logs/daemon.log')}")
            time.sleep(0.05)
        tids = os.listdir(f"/proc/{daemon.pid}/task")
        zygotes = [pid for pid in open(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read().split()
                   if open(f"/proc/{pid}/comm").read().strip() == "paddock-zygote"]
        if len(zygotes) != 1:
            raise SystemExit(f"restart-trace: the daemon has {len(zygotes)} zygotes, not one")
        first = count()
        trace.start(sorted(tids) + zygotes)
        try:
            while count() < first + runs + 1:
                if time.time() > deadline + runs:
                    raise SystemExit("restart-trace: the restart loop stalled")
                time.sleep(0.05)
        finally:
            events = trace.stop()
        os.remove(os.path.join(wl, "loop.toml"))
        return cut(events, paddock_steps(zygotes[0], forked(events)))
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def trace_floor(trace, runs):
    work = tempfile.mkdtemp(prefix="paddock-bench-trace.")
    try:
        out = os.path.join(work, "out")
        os.mkdir(out)
        os.chmod(out, 0o777)
        prog = os.path.join(work, "restart-floor")
        subprocess.run(["gcc", "-O2", "-o", prog, os.path.join(ROOT, "bench/restart-floor.c")], check=True)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write)
            os.read(read, 1)
            os.execv(prog, [prog, "-s", "/", out, "2000000000", str(runs + 1), "/bin/sh", "-c", COMMAND])
        os.close(read)
        trace.start([pid])
        try:
            os.write(write, b"x")
            os.close(write)
            _, status = os.waitpid(pid, 0)
        finally:
            events = trace.stop()
        if status != 0:
            raise SystemExit("restart-trace: restart-floor failed (above)")
        return cut(events, floor_steps(str(pid)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median(restarts, a, b):
    xs = [r[b] - r[a] for r in restarts]
    return statistics.median(xs) if xs else float("nan")


def main():
    if os.geteuid() != 0:
        raise SystemExit("restart-trace: run as root (it traces the kernel and starts a daemon)")
    if platform.machine() != "x86_64":
        raise SystemExit("restart-trace: the system call numbers here are x86_64's")
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    paddock = os.environ.get("PADDOCK")
    if not paddock:
        build = subprocess.run([os.path.join(ROOT, "packaging/build-release"), "--quiet"], check=True,
                               stdout=subprocess.PIPE, text=True)
        paddock = build.stdout.strip()
    trace = Trace()
    ours = trace_paddock(trace, paddock, runs)
    floor = trace_floor(trace, runs)
    if not ours or not floor:
        raise SystemExit(f"restart-trace: no whole restart found in the trace ({len(ours)} of paddock's, "
                         f"{len(floor)} of the floor's)")
    # Each row: paddock's step, and the floor's (None: the floor has no
    # such step, its time is in the row that names the same end).
    rows = [
        ("the workload's shell exits -> its init has reported the end", ("exit", "report"), None),
        ("-> the init exits (once the daemon has acknowledged the end)", ("report", "init exit"), None),
        ("-> the sandbox's last process is reaped (its mount namespace torn down; the network and user "
         "namespaces are freed later, in the background)", ("init exit", "reaped"),
         ("exit", "reaped")),
        ("-> the next clone begins (paddock: the cgroup, if any, emptied and removed; the record removed; "
         "the plan, the log, the sources, the zygote's request)", ("reaped", "clone"), ("reaped", "clone")),
        ("-> the clone returns (the namespaces made)", ("clone", "cloned"), ("clone", "cloned")),
        ("-> the init forks the workload (ids mapped, record, go, configuration, root, seccomp, capabilities)",
         ("cloned", "fork"), None),
        ("-> the workload's shell is exec'd (the floor: ids mapped, root)", ("fork", "exec"), ("cloned", "exec")),
        ("**the shell's exit to the next shell's exec**", ("exit", "exec"), ("exit", "exec")),
    ]
    print(f"restart-trace: {len(ours)} restarts of paddock's, {len(floor)} of the floor's (medians, ms; traced; "
          "-: the floor has no such step, its time is in the next figure of its column)\n")
    print("| step | paddock | floor, sandboxed |\n|---|---:|---:|")
    for name, mine, theirs in rows:
        other = f"{median(floor, *theirs):.2f}" if theirs else "-"
        print(f"| {name} | {median(ours, *mine):.2f} | {other} |")

if __name__ == "__main__":
    main()
