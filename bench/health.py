#!/usr/bin/env python3
"""Health checks at scale, on a real `paddock daemon` (root only).

N busybox workloads (default 1000), each its own id slice and private
network, each serving HTTP on 127.0.0.1:8080 inside (busybox `httpd -f`),
in three daemons one after the other, the same N workloads each time:

- tcp:  [health] tcp = 8080, interval = "1s"
- http: [health] http = { port = 8080 }, interval = "1s"
- none: no health check (the baseline)

For each: time from an empty daemon (its READY=1) to all N running and to
all N healthy; then the daemon's CPU over 60 s (utime + stime from
/proc/PID/stat, as % of one core, and per 5 s to show spikes) and its RSS
(VmRSS, VmHWM), threads and descriptors; then that all are still healthy
and none restarted; and SIGTERM to exit. Nothing polls the daemon during
the 60 s. Targets (the issue): with probes every second for 1000
workloads, daemon CPU under 5 % of a core and RSS under 64 MiB.

Prints a Markdown report and writes it to --out (default: none).

    sudo PADDOCK=/path/to/paddock bench/health.py [N] [--out FILE] [--variants tcp,http,none]

Without PADDOCK it builds the release binary (packaging/build-release).
"""
import argparse, collections, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")
PORT = 8080
WINDOW = 60
SLICE = 5

# From bench/daemon.py (world() here also sets run_dir and volumes_root,
# so nothing of /run/paddock is shared with other daemons).

def world(subuid):
    work = tempfile.mkdtemp(prefix="paddock-bench-health.")
    os.chmod(work, 0o755)
    wl = os.path.join(work, "wl")
    os.mkdir(wl); os.chmod(wl, 0o755)
    os.mkdir(os.path.join(work, "logs"))
    for f in ("passwd", "group"):
        shutil.copy(f"/etc/{f}", os.path.join(work, f))
    for f in ("subuid", "subgid"):
        with open(os.path.join(work, f), "w") as fh:
            fh.write(subuid)
    p = lambda f: os.path.join(work, f)
    with open(p("paddock.toml"), "w") as c:
        c.write(f'workloads = "{wl}"\nstate_dir = "{p("state")}"\nsocket = "{p("sock")}"\n'
                f'run_dir = "{p("run")}"\nvolumes_root = "{p("volumes")}"\n'
                f'policy_dir = "/nonexistent"\n[remap]\nsubuid = "{p("subuid")}"\nsubgid = "{p("subgid")}"\n'
                f'passwd = "{p("passwd")}"\ngroup = "{p("group")}"\n')
    return work, p, wl

class Notify:
    """A socket standing in for systemd's: the daemon says READY=1 on it."""
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.path = path
        self.ready = []
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        # This thread alone closes the socket (on stop()): closed under a
        # blocked recv, its descriptor number could be the next Notify's.
        while True:
            data = self.sock.recv(4096)
            if data == b"STOP":
                self.sock.close()
                return
            if b"READY=1" in data:
                self.ready.append(time.monotonic())

    def stop(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"STOP", self.path)

    def wait(self, daemon, timeout=600):
        """Seconds from now to READY=1. An empty daemon should say it at
        once: past 10 s, where its threads are blocked is kept as evidence."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.evidence = None
        while not self.ready:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited with {daemon.returncode} before READY=1")
            if time.monotonic() > deadline:
                raise SystemExit(f"no READY=1 within {timeout} s")
            if self.evidence is None and time.monotonic() - t0 > 10:
                self.evidence = stacks(daemon.pid) + "\n  " + answers(paddock_of(daemon), sock_of(self.path))
                print(f"no READY=1 after 10 s; the daemon's threads:\n{self.evidence}", file=sys.stderr, flush=True)
            time.sleep(0.01)
        return self.ready[0] - t0

def paddock_of(daemon):
    return daemon.args[0]

def sock_of(notify_path):
    return os.path.join(os.path.dirname(notify_path), "sock")

def answers(paddock, sock):
    """Whether the daemon answers `status` (its loop runs only after READY=1)."""
    try:
        out = subprocess.run([paddock, "status", "--socket", sock], capture_output=True, text=True, timeout=5)
        return f"`paddock status` exit {out.returncode}: {(out.stdout + out.stderr).strip()[:300]}"
    except subprocess.TimeoutExpired:
        return "`paddock status` did not answer within 5 s"

def stacks(pid):
    """Each thread's state, wchan and kernel stack, and the tasks in D state."""
    out = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        t = f"/proc/{pid}/task/{tid}"
        try:
            comm = open(f"{t}/comm").read().strip()
            state = open(f"{t}/stat").read().rsplit(")", 1)[1].split()[0]
            wchan = open(f"{t}/wchan").read().strip()
            stack = open(f"{t}/stack").read().strip().replace("\n", " <- ")
        except OSError as e:
            out.append(f"  {tid}: {e}")
            continue
        out.append(f"  {tid} {comm} {state} wchan={wchan}: {stack}")
    blocked = subprocess.run(["ps", "-eo", "pid,stat,wchan:32,comm"], capture_output=True, text=True).stdout
    out += ["  D-state tasks:"] + ["    " + l for l in blocked.splitlines() if l.split()[1:2] and "D" in l.split()[1]]
    return "\n".join(out)

def status(paddock, p):
    out = subprocess.run([paddock, "status", "--json", "--socket", p("sock")], capture_output=True, check=True)
    return json.loads(out.stdout)

def detail(paddock, p, name):
    out = subprocess.run([paddock, "status", "--json", "--socket", p("sock"), name], capture_output=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}

def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime

def proc_status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

def load():
    return " ".join(open("/proc/loadavg").read().split()[:3])

def busybox_rootfs(work):
    root = os.path.join(work, "rootfs")
    for d in ("bin", "proc", "dev", "tmp", "sys", "etc", "www"):
        os.makedirs(os.path.join(root, d))
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, os.path.join(root, "bin/busybox"))
    for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split():
        if not os.path.exists(os.path.join(root, "bin", applet)):
            os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "www/index.html"), "w") as f:
        f.write("ok\n")
    subprocess.run(["chmod", "-R", "a+rX", root], check=True)
    return root

HEALTH = {
    "tcp": f'[health]\ntcp = {PORT}\ninterval = "1s"\n',
    "http": f'[health]\nhttp = {{ port = {PORT}, path = "/index.html" }}\ninterval = "1s"\n',
    "none": "",
}

def run_variant(paddock, variant, n):
    """One daemon, N workloads with this variant's health check."""
    work, p, wl = world(f"paddock:1000000:{65536 * (n + 8)}\n")
    root = busybox_rootfs(work)
    r = dict(variant=variant, load_start=load())
    notify = Notify(p("notify"))
    log = open(p("logs/daemon.log"), "a")
    env = dict(os.environ, NOTIFY_SOCKET=p("notify"))
    # Names of their own per variant: cgroups and kept state are named
    # after workloads, and other daemons share the host's.
    prefix = {"tcp": "hbt", "http": "hbh", "none": "hbn"}[variant]
    names = [f"{prefix}{i:04}" for i in range(n)]
    daemon = None
    try:
        daemon = subprocess.Popen([paddock, "daemon", "--config", p("paddock.toml"), "--log-format", "json"],
                                  stderr=log, env=env)
        r["ready"] = notify.wait(daemon)
        r["ready_evidence"] = notify.evidence
        text = (f'command = ["/bin/httpd", "-f", "-p", "127.0.0.1:{PORT}", "-h", "/www"]\n'
                f'rootfs = {{ path = "{root}" }}\n{HEALTH[variant]}')
        t0 = time.monotonic()
        for name in names:
            tmp = os.path.join(wl, f".{name}.tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.rename(tmp, os.path.join(wl, f"{name}.toml"))
        r["written"] = time.monotonic() - t0
        deadline = time.monotonic() + 300
        running = healthy = None
        while running is None or (variant != "none" and healthy is None):
            st = status(paddock, p)
            now = time.monotonic() - t0
            if running is None and sum(w["state"] == "running" for w in st) == n:
                running = now
            if variant != "none" and sum(w.get("health") == "healthy" for w in st) == n:
                healthy = now
            if time.monotonic() > deadline:
                c = collections.Counter((w["state"], w.get("health")) for w in st)
                raise SystemExit(f"{variant}: not all running/healthy after 300 s: {dict(c)}; see {p('logs/daemon.log')}")
            time.sleep(0.2)
        r["all_running"], r["all_healthy"] = running, healthy
        # Settle, then measure with nothing asking the daemon anything.
        time.sleep(3)
        r["load_window_start"] = load()
        log.flush()
        log_at = os.path.getsize(p("logs/daemon.log"))
        fds0 = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        c0, w0 = cpu_ticks(daemon.pid), time.monotonic()
        slices = []
        c, w = c0, w0
        while time.monotonic() - w0 < WINDOW - 0.01:
            time.sleep(SLICE)
            c2, w2 = cpu_ticks(daemon.pid), time.monotonic()
            slices.append((c2 - c) / TICKS / (w2 - w) * 100)
            c, w = c2, w2
        r["cpu"] = (c - c0) / TICKS / (w - w0) * 100
        r["cpu_slices"] = slices
        r["rss"] = proc_status(daemon.pid, "VmRSS") / 1024
        r["hwm"] = proc_status(daemon.pid, "VmHWM") / 1024
        r["threads"] = proc_status(daemon.pid, "Threads")
        r["fds"] = (fds0, len(os.listdir(f"/proc/{daemon.pid}/fd")))
        r["load_window_end"] = load()
        # What the daemon logged during the window.
        messages = collections.Counter()
        with open(p("logs/daemon.log")) as f:
            f.seek(log_at)
            for line in f:
                try:
                    e = json.loads(line)
                    messages[(e.get("level"), e.get("fields", {}).get("message"))] += 1
                except ValueError:
                    messages[("?", line.strip()[:80])] += 1
        r["window_log"] = messages
        st = status(paddock, p)
        r["after"] = collections.Counter((w["state"], w.get("health")) for w in st)
        r["restarts"] = sum(w.get("restarts", 0) for w in st)
        if variant != "none":
            # The last probes of one workload, as evidence they are made.
            d = detail(paddock, p, names[n // 2])
            r["probes"] = d.get("probes", [])
        t = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        r["exit"] = daemon.wait(timeout=300)
        r["shutdown"] = time.monotonic() - t
        r["load_end"] = load()
        return r
    except BaseException:
        # Evidence first: the end of the daemon's log.
        log.flush()
        with open(p("logs/daemon.log"), errors="replace") as f:
            tail = f.readlines()[-30:]
        print(f"{variant}: failed; the end of the daemon's log:\n" + "".join(tail), file=sys.stderr)
        raise
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.terminate()
            daemon.wait(timeout=300)
        notify.stop()
        log.close()
        if os.environ.get("KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

def report(results, n, paddock, argv):
    out = []
    w = out.append
    w(f"Linux {os.uname().release}, {os.cpu_count()} CPUs; `{' '.join(argv)}` with PADDOCK={paddock}.\n")
    w(f"{n} busybox workloads (`httpd -f -p 127.0.0.1:{PORT}` in a busybox rootfs, each its own id slice "
      f"and private network namespace), {len(results)} daemon(s) one after the other, "
      "nothing asking the daemon anything during the CPU window.\n")
    cols = [r["variant"] for r in results]
    w("| measure | " + " | ".join(cols) + " |")
    w("|---|" + "---:|" * len(cols))
    def row(label, f):
        w(f"| {label} | " + " | ".join(f(r) for r in results) + " |")
    row("health check", lambda r: {"tcp": "`tcp = 8080`, 1s", "http": "`http`, 1s", "none": "none"}[r["variant"]])
    row("empty daemon started to its READY=1", lambda r: f"{r['ready']:.2f} s")
    row(f"{n} manifests written", lambda r: f"{r['written']:.2f} s")
    row(f"empty daemon (READY=1) to all {n} running", lambda r: f"{r['all_running']:.1f} s")
    row(f"empty daemon to all {n} healthy", lambda r: "-" if r["all_healthy"] is None else f"{r['all_healthy']:.1f} s")
    row(f"daemon CPU over {WINDOW} s (% of one core)", lambda r: f"{r['cpu']:.2f} %")
    row(f"daemon CPU per {SLICE} s: min / max", lambda r: f"{min(r['cpu_slices']):.2f} / {max(r['cpu_slices']):.2f} %")
    row("daemon RSS (VmRSS) after the window", lambda r: f"{r['rss']:.1f} MiB")
    row("daemon peak RSS (VmHWM)", lambda r: f"{r['hwm']:.1f} MiB")
    row("daemon threads", lambda r: str(r["threads"]))
    row("daemon descriptors, window start / end", lambda r: f"{r['fds'][0]} / {r['fds'][1]}")
    row("after the window: state (health) counts", lambda r: ", ".join(f"{c} {s}" + (f" ({h})" if h else "") for (s, h), c in sorted(r["after"].items(), key=str)))
    row("restarts", lambda r: str(r["restarts"]))
    row("daemon log lines in the window", lambda r: str(sum(r["window_log"].values())))
    row(f"SIGTERM to exit (all {n} stopped)", lambda r: f"{r['shutdown']:.1f} s (exit {r['exit']})")
    row("load average: start / window start / window end / end", lambda r: f"{r['load_start']} / {r['load_window_start']} / {r['load_window_end']} / {r['load_end']}")
    base = next((r for r in results if r["variant"] == "none"), None)
    w("")
    for r in results:
        if r["variant"] == "none":
            continue
        cpu_ok = "met" if r["cpu"] < 5 else "MISSED"
        rss_ok = "met" if r["rss"] < 64 else "MISSED"
        line = (f"- {r['variant']}: CPU {r['cpu']:.2f} % of a core (target under 5 %: {cpu_ok}), "
                f"RSS {r['rss']:.1f} MiB (target under 64 MiB: {rss_ok})")
        if base:
            extra = r["cpu"] - base["cpu"]
            line += (f"; {extra:+.2f} % of a core over no health checks, i.e. about "
                     f"{extra / 100 / n * 1e6:.0f} µs of daemon CPU per probe ({n} probes/s)")
        w(line + ".")
    w("")
    for r in results:
        if r.get("ready_evidence"):
            w(f"{r['variant']}: READY=1 only after {r['ready']:.1f} s; 10 s after the start the daemon's threads were:\n```\n{r['ready_evidence']}\n```")
    for r in results:
        w(f"CPU per {SLICE} s, {r['variant']}: " + ", ".join(f"{x:.1f}" for x in r["cpu_slices"]))
        if r["window_log"]:
            top = ", ".join(f"{c}x {lvl} {msg!r}" for (lvl, msg), c in r["window_log"].most_common(5))
            w(f"  log in the window: {top}")
        if r.get("probes"):
            last = r["probes"][-1]
            w(f"  last probe of one workload: {json.dumps(last)[:200]}")
    return "\n".join(out) + "\n"

def main():
    global WINDOW
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1000)
    ap.add_argument("--out")
    ap.add_argument("--variants", default="tcp,http,none")
    ap.add_argument("--window", type=int, default=WINDOW, help="seconds of CPU measurement (default 60)")
    args = ap.parse_args()
    WINDOW = args.window
    paddock = os.environ.get("PADDOCK")
    if not paddock:
        # The binary as shipped (static-pie); packaging/build-release prints its path.
        build = subprocess.run([os.path.join(ROOT, "packaging/build-release"), "--quiet"], check=True, stdout=subprocess.PIPE, text=True)
        paddock = build.stdout.strip()
    results = []
    for v in args.variants.split(","):
        print(f"{v}: {args.n} workloads, load {load()}", file=sys.stderr, flush=True)
        results.append(run_variant(paddock, v, args.n))
        r = results[-1]
        print(f"{v}: running {r['all_running']:.1f} s, healthy {r['all_healthy']}, cpu {r['cpu']:.2f} %, "
              f"rss {r['rss']:.1f} MiB, after {dict(r['after'])}", file=sys.stderr, flush=True)
    text = report(results, args.n, paddock, ["bench/health.py"] + sys.argv[1:])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)

if __name__ == "__main__":
    main()
