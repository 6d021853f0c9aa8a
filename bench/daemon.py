#!/usr/bin/env python3
"""Supervisor latencies, measured on a real `paddock daemon` (root only).

- reload: from rename() of a new manifest into the workloads directory to
  the workload's first instruction (it writes a timestamp), p50 and p99;
- restart: from a workload's exit to its next start with backoff = "0s",
  p50 and p99 (the gap between consecutive start timestamps of a workload
  that exits at once);
- scale: SCALE workloads (busybox sleep, in a busybox rootfs, each in its
  own id slice) from an empty daemon to all running; the daemon's RSS and
  CPU while idle afterwards; one edit among SCALE files, from rename() to
  the new version's first instruction; `paddock upgrade` (an in-place
  re-exec) and a kill -9 followed by a new daemon, each to READY=1 with
  every sandbox adopted and none restarted; and the shutdown of all of them;
  then its floor: the same sandboxes started by a bare C loop; then the
  ramp again on a new journaled ext4 (a loop device; needs mkfs.ext4).
- systemd: the restart measure's peer, the same command as a systemd
  service with Restart=always, RestartSec=0 and the closest sandbox systemd
  252 offers (PrivateUsers=, PrivateNetwork=, ProtectSystem=strict,
  NoNewPrivileges=), under a real systemd 252 as PID 1 of a Debian bookworm
  container booted with systemd-nspawn; and the same service without those
  options. It needs systemd-nspawn and nsenter (apt-get install
  systemd-container debootstrap) and the tree tests/systemd/tree.sh builds
  (/var/cache/paddock-tests/bookworm); without them it fails and says so.

Usage: sudo [PADDOCK=BINARY] bench/daemon.py [TRIALS] [SCALE] [--only PARTS]

TRIALS (default 200) counts the reload and restart trials, the same for
paddock and systemd; SCALE (default 1000) the scale part's workloads.
Without --only every part runs and bench/RESULTS-daemon.md is rewritten.
--only PARTS, a comma-separated list of reload, restart, systemd and scale,
runs those parts alone and prints their rows: RESULTS-daemon.md is left
as it is (it holds a full run).
"""
import argparse, contextlib, datetime, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIALS = 200
SCALE = 1000
TICKS = os.sysconf("SC_CLK_TCK")
PARTS = ("reload", "restart", "systemd", "scale")
# The Debian tree tests/systemd.rs boots (tests/systemd/tree.sh builds it).
TREE = "/var/cache/paddock-tests/bookworm"

NOTES = """
Notes:

- Reload latency is mostly the watcher's 20 ms debounce (an editor's
  write-and-rename lands as one change); the rest is the rescan,
  validation and the sandbox start. For comparison, kubelet notices a static pod's file on
  its 20 s resync, and Podman Quadlet not until `systemctl daemon-reload`:
  neither is timed here (no kubelet; Podman cannot run on this host).
- Restart: the daemon sees the exit on the sandbox's channel (the init's
  report) and begins the next start within a tenth of a millisecond; the
  rest is the sandbox's end (the init's exit, its namespaces freed) and the
  next start (the zygote's clone, the init in place, the root's mounts,
  seccomp, then the workload's own shell and its `date`). The floor row
  is the same command restarted by a bare C loop (fork, execv, waitpid,
  again: bench/restart-floor.c), with no sandbox and no supervisor: what
  the command's own exit and start cost here (its shell and `date` are
  dynamic glibc programs, and glibc's start runs about a hundred `cpuid`
  instructions, each a trap to the hypervisor on this VM). Nothing can
  restart this command faster. The sandboxed floor row restarts it in the
  same sandbox the daemon builds for it, each run cloned by the bare loop
  (bench/restart-floor.c -s): the same namespaces, id maps, the host's `/`
  read-only under an overlay holding /out, the same mounts, loopback up,
  the command exec'd as the sandbox's PID 1, the loop's waitpid returning
  once the sandbox is gone. It has no init beside the command, no seccomp
  filter, no record, no log and no event loop: no supervisor of that
  sandbox can restart the command faster (at p50: its tail is the
  kernel's teardown on a busy VM). Runs differ by as much as paddock's
  own share, so that share is read from bench/restart-trace.py's traced
  steps (bench/PROFILE.md), not from the difference of two rows. Two
  more floor rows measure, the same way, designs paddock does not have:
  the sandbox prepared ahead (-p: each run's sandbox built while the run
  before runs, started at the end's report by a minimal init) and the
  sandbox kept (-k: one sandbox whose PID 1 runs the command again),
  for what a supervisor built either way could reach here at best. Each
  run lasts 150 ms, past the 100 ms floor between two starts of a
  workload, which therefore adds nothing. The sandbox's init is cloned by
  the daemon's zygote (forked at the daemon's start, while it is one
  thread and has read no manifest) and runs in place: no process start of
  paddock, and no copy of the daemon's memory in each sandbox's PID 1.
- Up to 64 sandboxes start at once; their inits build their roots in
  parallel. The scale floor rows start the same SCALE busybox `sleep`s
  in the same busybox rootfs with a bare C loop (bench/scale-floor.c),
  after the daemon has stopped: each clone into new user, mount, pid,
  uts, ipc and network namespaces, its id maps written by the parent (a
  slice of its own), the rootfs bound and pivoted into, then the exec;
  the second row adds the mounts every one of the daemon's sandboxes has
  and loopback up. Neither has an init beside the workload, seccomp, a
  cgroup, a record, a log or a manifest to read: what the kernel and the
  workload's own start cost here, which no supervisor can undercut.
  paddock's ramp ends at the daemon's own timestamp of the last start
  (its "started" event, read from its log as it is written; a `status`
  then confirms all run). Until 2026-12-07 it ended at the first `status
  --json` poll (every 0.1 s) that found all running: up to 0.1 s late,
  and each poll of 1000 rows took about 25 ms of CPU from the ramp.
  Each row is the least of three runs, alternated (all three shown). Before paddock's ramp and before each floor run the script
  waits until the network namespaces of earlier sandboxes are freed
  (their count in /proc/slabinfo has not fallen for 5 s; at most 2
  minutes, said if so): the kernel frees them in the background, at
  times for tens of seconds after a thousand, and a measure taken
  meanwhile shares the CPUs with that cleanup.
- The scale part's second ramp is the same ramp on a new ext4 with a
  journal (mkfs.ext4's default, as on most hosts), on a loop device over
  a sparse file in /var/tmp, holding the daemon's state, its logs, the
  workloads directory and the rootfs. This VM's root filesystem is ext4
  without a journal, and there the kernel's search for a free inode
  skips every inode freed in the last minutes, looking up each one's
  inode-table block in the buffer cache (`recently_deleted`, checked
  only when there is no journal): after earlier parts and runs have
  removed thousands of files, every new file the daemon makes (a
  sandbox's record, its log, its kept state) walks them, as do the
  bench's own manifest writes (hence their spread from one run to the
  next). The rows of the daemon's CPU over each ramp show its share.
- The systemd rows: a Debian bookworm tree (tests/systemd/tree.sh) booted
  with `systemd-nspawn -b` (as tests/systemd.rs does: an overlay over the
  cached tree, --register=no, --keep-unit, journald running), systemd 252
  as its PID 1, measured right after paddock's restart rows, in the same
  run, with the same TRIALS. The unit runs the same command with the
  container's /bin/sh and `date` (Type=simple, Restart=always,
  RestartSec=0); /out is the host's directory bound in (`--bind`), so the
  stamps are read on the host, and CLOCK_REALTIME is the host's.
  StartLimitIntervalSec=0 turns off the start rate limit, which by default
  (5 starts in 10 s) stops the unit after its fifth start at these 160 ms
  runs; paddock's max_retries = 0 never gives up either. The sandbox is
  PrivateUsers=yes, PrivateNetwork=yes, ProtectSystem=strict,
  NoNewPrivileges=yes and ReadWritePaths=/out, and each start makes only
  a user, a mount and a network namespace; paddock's makes a user, mount,
  pid, ipc, uts, network and cgroup namespace. Checked in the container:
  PrivateUsers= maps only root (and the unit's user) to itself, so root in
  the service is the container's root, which is the host's (nspawn without
  --private-users), where paddock's root is an unprivileged id of the
  workload's own 65536-id slice; the network namespace has only `lo`, as
  paddock's; ProtectSystem=strict leaves the container's own root
  read-only but for /out and /dev (no new root: paddock pivots into the
  rootfs, here the host's /, with its own /proc, /dev and /tmp); the pid,
  ipc, uts and cgroup namespaces are the container's, made once by nspawn
  and shared with everything in it (systemd 252 has no PrivatePIDs=, and
  PrivateIPC= and ProtectHostname= were not asked for); the seccomp
  filters are nspawn's five, around the whole container, none of the
  unit's own, where paddock loads its Docker-like one per workload; the
  capability bounding set is the container root's, every capability,
  where paddock keeps Docker's default set; no_new_privs in both. The
  rows "of which" split systemd's restart with its own journal messages,
  stamped by journald as they arrive (so each boundary is late by
  journald's scheduling, which the load shifts). The same service without
  the sandbox options shows what the options themselves cost.
"""

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def world(paddock, subuid="", base=None):
    """Temp directories (in base, else the temp directory) and a config for
    one daemon; returns (work, p, wl, out)."""
    work = tempfile.mkdtemp(prefix="paddock-bench-daemon.", dir=base)
    os.chmod(work, 0o755)
    wl, out = os.path.join(work, "wl"), os.path.join(work, "out")
    os.mkdir(wl); os.chmod(wl, 0o755)
    os.mkdir(out); os.chmod(out, 0o777)
    os.mkdir(os.path.join(work, "logs"))
    for f in ("passwd", "group"):
        shutil.copy(f"/etc/{f}", os.path.join(work, f))
    for f in ("subuid", "subgid"):
        with open(os.path.join(work, f), "w") as fh:
            fh.write(subuid)
    p = lambda f: os.path.join(work, f)
    with open(p("paddock.toml"), "w") as c:
        c.write(f'workloads = "{wl}"\nstate_dir = "{p("state")}"\nsocket = "{p("sock")}"\n'
                f'policy_dir = "/nonexistent"\n[remap]\nsubuid = "{p("subuid")}"\nsubgid = "{p("subgid")}"\n'
                f'passwd = "{p("passwd")}"\ngroup = "{p("group")}"\n')
    return work, p, wl, out

def start_daemon(paddock, p, notify=None):
    # In logs/, apart from the workloads' files.
    log = open(p("logs/daemon.log"), "a")
    env = dict(os.environ)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.getsockname()
    daemon = subprocess.Popen([paddock, "daemon", "--config", p("paddock.toml"), "--log-format", "json"], stderr=log,
                              env=env)
    if notify is None:
        while not os.path.exists(p("sock")):
            time.sleep(0.01)
    return daemon

class Notify:
    """A socket standing in for systemd's, read all along (as systemd does):
    the daemon says READY=1 on it."""
    def __init__(self, p):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(p("notify"))
        self.ready = []  # monotonic times of READY=1
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def getsockname(self):
        return self.sock.getsockname()

    def read(self):
        while True:
            message = self.sock.recv(4096)
            if not message:  # close() shut it down
                return
            if b"READY=1" in message:
                self.ready.append(time.monotonic())

    def close(self):
        """Wakes and ends the reader, then closes the socket (a bound one
        keeps its filesystem busy)."""
        self.sock.shutdown(socket.SHUT_RDWR)
        self.reader.join(5)
        self.sock.close()

    def ready_after(self, t0, timeout=120):
        """Seconds from t0 to the first READY=1 after it."""
        deadline = time.monotonic() + timeout
        while not any(t > t0 for t in self.ready):
            if time.monotonic() > deadline:
                raise SystemExit("no READY=1")
            time.sleep(0.001)
        return min(t for t in self.ready if t > t0) - t0

def applied_ms(wl, name, text, stamp, why):
    """Writes `text` as wl/name (a write and a rename, as an editor does)
    and waits for the workload to write its first timestamp to `stamp`:
    the milliseconds from the rename to that first instruction."""
    tmp = os.path.join(wl, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    t0 = time.time_ns()
    os.rename(tmp, os.path.join(wl, name))
    deadline = time.time() + 10
    while not (os.path.exists(stamp) and os.path.getsize(stamp) > 0):
        if time.time() > deadline:
            raise SystemExit(why)
        time.sleep(0.0002)
    return (int(open(stamp).read()) - t0) / 1e6

def status(paddock, p):
    out = subprocess.run([paddock, "status", "--json", "--socket", p("sock")], capture_output=True, check=True)
    return json.loads(out.stdout)

def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def busybox_rootfs(work):
    root = os.path.join(work, "rootfs")
    for d in ("bin", "proc", "dev", "tmp", "sys"):
        os.makedirs(os.path.join(root, d))
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, os.path.join(root, "bin/busybox"))
    os.symlink("busybox", os.path.join(root, "bin/sleep"))
    subprocess.run(["chmod", "-R", "a+rX", root], check=True)
    return root

def ramp(paddock, p, wl, root, daemon):
    """SCALE sleeping workloads written into an empty daemon's directory;
    returns (seconds to write them, seconds from the first write until all
    run, the daemon's CPU seconds meanwhile).

    All run when the daemon logs the last of their starts: its "started"
    event, stamped by the daemon as it marks the workload running, read
    from its log as it is written; one `status` then confirms that every
    one runs (else the ramp goes on until they do). Until 2026-12-07 the
    ramp polled `status --json` every 0.1 s instead: up to 0.1 s late, and
    each poll of 1000 rows cost about 25 ms of CPU (the command, its JSON
    and Python's parse), a tenth of this 2-CPU machine during the ramp
    it measured."""
    text = f'command = ["/bin/sleep", "100000"]\nrootfs = {{ path = "{root}" }}\n'
    names = {f"s{i:04}" for i in range(SCALE)}
    log = open(p("logs/daemon.log"), "rb")
    log.seek(0, os.SEEK_END)
    c0 = d0 = cpu_ticks(daemon.pid)
    t0 = time.time()
    for i in range(SCALE):
        tmp = os.path.join(wl, f".s{i}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(wl, f"s{i:04}.toml"))
    written = time.time() - t0
    deadline = time.time() + 120
    started, partial = {}, b""
    while True:
        chunk = log.read()
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not the daemon's JSON (a panic's text)
            fields = event.get("fields", {})
            if fields.get("message") == "started" and fields.get("workload") in names:
                at = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
                started[fields["workload"]] = at
        if len(started) == SCALE:
            d0 = cpu_ticks(daemon.pid)
            if sum(w["state"] == "running" for w in status(paddock, p)) == SCALE:
                break
        if time.time() > deadline:
            raise SystemExit(f"scale: not all running; see {p('logs/daemon.log')}")
        time.sleep(0.005)
    log.close()
    return written, max(started.values()) - t0, (d0 - c0) / TICKS

@contextlib.contextmanager
def journaled_fs():
    """A new ext4 with a journal (mkfs.ext4's default), on a loop device
    backed by a sparse file in /var/tmp, mounted at a temp directory; all
    of it removed afterwards, whatever happened (a mount still busy is
    detached: `mount -o loop` frees its loop device with its last user)."""
    fd, image = tempfile.mkstemp(prefix="paddock-bench-ext4.", suffix=".img", dir="/var/tmp")
    mnt = None
    try:
        os.ftruncate(fd, 4 << 30)
        os.close(fd)
        mnt = tempfile.mkdtemp(prefix="paddock-bench-ext4.")
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "has_journal", image], check=True)
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
        try:
            yield mnt
        finally:
            if subprocess.run(["umount", mnt]).returncode != 0:
                subprocess.run(["umount", "-l", mnt])
    finally:
        os.unlink(image)
        if mnt is not None:
            try:
                os.rmdir(mnt)
            except OSError as e:
                print(f"journaled_fs: {mnt} left behind: {e}", file=sys.stderr)

def stop_daemon(daemon):
    """SIGTERM (it stops every sandbox first), then SIGKILL after 120 s."""
    if daemon is not None and daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()

def scale_journaled(paddock):
    """The scale part's ramp again, with everything the daemon writes (its
    state, logs, the workloads directory) and the rootfs on a journaled
    ext4; the ramp alone: (written, all running, the daemon's CPU
    meanwhile). A daemon that died leaves its sandboxes running, holding
    the filesystem: it is then detached, not unmounted."""
    with journaled_fs() as mnt:
        work, p, wl, _ = world(paddock, subuid=f"paddock:1000000:{65536 * (SCALE + 8)}\n", base=mnt)
        notify = daemon = None
        try:
            root = busybox_rootfs(work)
            settle()
            notify = Notify(p)
            daemon = start_daemon(paddock, p, notify)
            notify.ready_after(0)
            return ramp(paddock, p, wl, root, daemon)
        finally:
            stop_daemon(daemon)
            if notify is not None:
                notify.close()
            shutil.rmtree(work, ignore_errors=True)

def scale(paddock):
    """SCALE sleeping workloads, each in its own slice of 65536 ids."""
    ids = 65536 * (SCALE + 8)
    work, p, wl, out = world(paddock, subuid=f"paddock:1000000:{ids}\n")
    root = busybox_rootfs(work)
    # Compiled first: a compiler that fails costs no measure.
    floor_prog = compile_scale_floor(work)
    # The network namespaces of earlier parts freed first, as before each floor run.
    settle()
    notify = Notify(p)
    daemon = start_daemon(paddock, p, notify)
    notify.ready_after(0)
    try:
        written, all_running, ramp_cpu = ramp(paddock, p, wl, root, daemon)
        time.sleep(2)
        c0, w0 = cpu_ticks(daemon.pid), time.time()
        # Long enough to hold two periodic resyncs (every 30 s by default).
        time.sleep(60)
        idle_cpu = (cpu_ticks(daemon.pid) - c0) / TICKS / (time.time() - w0) * 100
        rss = rss_kib(daemon.pid) / 1024
        # One edit among SCALE files: the new version writes a timestamp first.
        edit_ms = []
        for trial in range(20):
            stamp = os.path.join(out, f"edit{trial}")
            new = (f'command = ["/bin/sh", "-c", "date +%s%N > /out/edit{trial}; exec sleep 100000"]\n'
                   f'[[mounts]]\nsource = "{out}"\ntarget = "/out"\nreadonly = false\n')
            name = "s0500.toml" if SCALE > 500 else "s0000.toml"
            edit_ms.append(applied_ms(wl, name, new, stamp, f"scale: the edit never applied; see {p('logs/daemon.log')}"))
        pids = {w["name"]: w["pid"] for w in status(paddock, p)}
        # Upgrade in place: `paddock upgrade` to the re-executed daemon's
        # READY=1 (every sandbox adopted), five times.
        upgrade_ms = []
        for _ in range(5):
            t = time.monotonic()
            subprocess.Popen([paddock, "upgrade", "--socket", p("sock")], stdout=subprocess.DEVNULL)
            upgrade_ms.append(notify.ready_after(t) * 1e3)
            time.sleep(1)
        assert daemon.poll() is None, "the upgrade changed the daemon's pid"
        same_after_upgrade = pids == {w["name"]: w["pid"] for w in status(paddock, p)}
        # Adoption: kill -9 the daemon, start a new one, until its READY=1.
        adopt_ms = []
        for _ in range(5):
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()
            t = time.monotonic()
            daemon = start_daemon(paddock, p, notify)
            adopt_ms.append(notify.ready_after(t) * 1e3)
            time.sleep(1)
        after = status(paddock, p)
        same_after_adoption = pids == {w["name"]: w["pid"] for w in after}
        restarted = sum(w["restarts"] for w in after)
        t = time.time()
        daemon.terminate()
        daemon.wait(timeout=120)
        shutdown = time.time() - t
        floor = scale_floor(floor_prog, root)
        return dict(written=written, all_running=all_running, ramp_cpu=ramp_cpu, idle_cpu=idle_cpu, rss=rss, edit_ms=edit_ms,
                    shutdown=shutdown, upgrade_ms=upgrade_ms, adopt_ms=adopt_ms, restarted=restarted,
                    same_pids=same_after_upgrade and same_after_adoption, floor=floor)
    finally:
        # Sandboxes outlive a killed daemon: stop them through it.
        stop_daemon(daemon)
        shutil.rmtree(work, ignore_errors=True)

def paddock_latencies(paddock, parts):
    """reload and restart, on one daemon (each only when in parts)."""
    res = {}
    work, p, wl, out = world(paddock)
    daemon = start_daemon(paddock, p)
    try:
        mount = f'[[mounts]]\nsource = "{out}"\ntarget = "/out"\nreadonly = false\n'
        if "reload" in parts:
            reload_ms = []
            for i in range(TRIALS):
                stamp = os.path.join(out, f"r{i}")
                text = f'command = ["/bin/sh", "-c", "date +%s%N > /out/r{i}; exec sleep 1000"]\n{mount}'
                why = f"trial {i}: the workload never started; see {p('logs/daemon.log')}"
                reload_ms.append(applied_ms(wl, f"r{i}.toml", text, stamp, why))
                os.remove(os.path.join(wl, f"r{i}.toml"))
            res["reload_ms"] = reload_ms
        if "restart" in parts:
            # Restart latency: a workload that exits after 150 ms (past the
            # 100 ms floor between two starts, so no delay is added) and is
            # restarted with backoff = "0s".
            stamps = os.path.join(out, "restarts")
            with open(os.path.join(wl, ".loop.tmp"), "w") as f:
                # The second stamp is the run's last instruction before its exit.
                f.write('command = ["/bin/sh", "-c", "date +%s%N >> /out/restarts; sleep 0.15; date +%s%N >> /out/exits; exit 1"]\n'
                        f'[restart]\npolicy = "always"\nbackoff = "0s"\nmax_retries = 0\n{mount}')
            os.rename(os.path.join(wl, ".loop.tmp"), os.path.join(wl, "loop.toml"))
            deadline = time.time() + 60 + TRIALS * 0.2
            while not os.path.exists(stamps) or len(open(stamps).read().split()) < TRIALS + 1:
                if time.time() > deadline:
                    raise SystemExit("the restart loop stalled")
                time.sleep(0.05)
            os.remove(os.path.join(wl, "loop.toml"))
            ts = [int(x) for x in open(stamps).read().split()][: TRIALS + 1]
            exits = [int(x) for x in open(os.path.join(out, "exits")).read().split()][:TRIALS]
            restart_ms = [(b - a) / 1e6 for a, b in zip(ts, ts[1:])]
            exit_to_start_ms = [(b - a) / 1e6 for a, b in zip(exits, ts[1:])]
            # Where a restart's time goes, from the daemon's own log lines (same clock).
            seen, begun = [], []
            for line in open(p("logs/daemon.log")):
                event = json.loads(line)
                when = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp() * 1e9
                fields = event.get("fields", {})
                if fields.get("workload") == "loop" and fields.get("message") == "exited":
                    seen.append(when)
                elif fields.get("workload") == "loop" and fields.get("message") == "starting":
                    begun.append(when)
            n = min(len(exits), len(seen), len(begun) - 1, len(ts) - 1)
            breakdown = [
                ("the run's last instruction -> the daemon has the exit (the init's report, its exit, the cgroup emptied)", [(seen[i] - exits[i]) / 1e6 for i in range(n)]),
                ("exit seen -> the next start begins (plan, slice, log pipe)", [(begun[i + 1] - seen[i]) / 1e6 for i in range(n)]),
                ("start begins -> the next run's first instruction (sandbox, init, exec)", [(ts[i + 1] - begun[i + 1]) / 1e6 for i in range(n)]),
            ]
            res.update(exit_to_start_ms=exit_to_start_ms, restart_ms=restart_ms, breakdown=breakdown)
            res["floor_ms"] = restart_floor(work)
            # The least of three runs (by p50), as the scale floor's: its
            # namespaces' teardown makes it the noisier of the two.
            runs = [restart_floor(work, design="s", run=i) for i in range(3)]
            res["sandboxed_floor_runs"] = [pct(r, 50) for r in runs]
            res["sandboxed_floor_ms"] = min(runs, key=lambda r: pct(r, 50))
            # The floors of two designs paddock does not have, measured the same way.
            for design, key in (("p", "prepared"), ("k", "kept")):
                runs = [restart_floor(work, design=design, run=i) for i in range(3)]
                res[f"{key}_floor_runs"] = [pct(r, 50) for r in runs]
                res[f"{key}_floor_ms"] = min(runs, key=lambda r: pct(r, 50))
    finally:
        stop_daemon(daemon)
        shutil.rmtree(work, ignore_errors=True)
    return res

# systemd's peer of the restart measure: the same command, Restart=always,
# RestartSec=0, and (SANDBOX) the closest sandbox systemd 252 offers.
# StartLimitIntervalSec=0 turns the start rate limit off: its default (5
# starts in 10 s) stops a unit whose runs last 150 ms after its fifth start,
# and paddock's max_retries = 0 never gives up either. `%` is doubled for
# systemd's specifiers.
UNIT = """[Unit]
Description=paddock bench: the restart measure's peer ({what})
StartLimitIntervalSec=0

[Service]
ExecStart=/bin/sh -c "date +%%s%%N >> /out/{name}.restarts; sleep 0.15; date +%%s%%N >> /out/{name}.exits; exit 1"
Restart=always
RestartSec=0
{sandbox}"""
SANDBOX = "PrivateUsers=yes\nPrivateNetwork=yes\nProtectSystem=strict\nNoNewPrivileges=yes\nReadWritePaths=/out\n"

def restart_floor(work, design=None, run=0):
    """The restart measure's floors (bench/restart-floor.c): the same
    command restarted by a bare fork/exec/wait loop in C, unsandboxed; or,
    with a design ("s"), each run cloned by the loop into the sandbox the
    daemon builds for it (namespaces, id maps, the overlay root and its
    mounts), with no init, seccomp, cgroup, record or log; "p", that
    sandbox prepared while the run before runs; "k", one sandbox kept for
    every run."""
    sandboxed = design is not None
    out = os.path.join(work, f"floor-{design}-{run}" if sandboxed else "floor")
    os.makedirs(out)
    os.chmod(out, 0o777)
    prog = os.path.join(work, "restart-floor")
    subprocess.run(["gcc", "-O2", "-o", prog, os.path.join(ROOT, "bench/restart-floor.c")], check=True)
    at = "/out" if sandboxed else out
    script = f"date +%s%N >> {at}/restarts; sleep 0.15; date +%s%N >> {at}/exits; exit 1"
    # An id range no host account has (the daemon's bench world gives none out).
    how = [f"-{design}", "/", out, "2000000000"] if sandboxed else []
    subprocess.run([prog, *how, str(TRIALS + 1), "/bin/sh", "-c", script], check=True)
    ts = [int(x) for x in open(os.path.join(out, "restarts")).read().split()]
    exits = [int(x) for x in open(os.path.join(out, "exits")).read().split()]
    return [(b - a) / 1e6 for a, b in zip(exits, ts[1:])]

def net_namespaces():
    """Network namespaces the kernel still holds (freed ones linger: their
    cleanup runs in the background, tens of seconds after a thousand), or
    None where /proc/slabinfo does not show them."""
    try:
        for line in open("/proc/slabinfo"):
            if line.startswith("net_namespace "):
                return int(line.split()[1])
    except OSError:
        pass
    return None

def settle(timeout=120):
    """Waits until the namespaces of sandboxes that ended are freed, so a
    measure does not share the CPUs with the last one's teardown: until
    the count of network namespaces has not fallen for 5 s (what is left
    then is not being freed). Says so when it cannot tell or gives up."""
    deadline = time.time() + timeout
    last, since = net_namespaces(), time.time()
    if last is None:
        print("settle: /proc/slabinfo shows no net_namespace; waiting 10 s instead", file=sys.stderr)
        time.sleep(10)
        return
    while time.time() < deadline:
        time.sleep(0.5)
        now = net_namespaces()
        if now is not None and now < last:
            last, since = now, time.time()
        elif time.time() - since >= 5:
            return
    print(f"settle: network namespaces still being freed after {timeout} s ({last} left); measuring anyway",
          file=sys.stderr)

def compile_scale_floor(work):
    prog = os.path.join(work, "scale-floor")
    subprocess.run(["gcc", "-O2", "-o", prog, os.path.join(ROOT, "bench/scale-floor.c")], check=True)
    return prog

FLOOR_RUNS = 3

def scale_floor(prog, root):
    """The scale measure's floor: the same SCALE busybox `sleep`s, each in
    its own namespaces and slice, started by a bare C loop
    (bench/scale-floor.c), with no supervisor; without and with the mounts
    every sandbox of the daemon's has, FLOOR_RUNS times each, alternated,
    each on a settled machine. Seconds, from the first clone to the last
    exec, every run (the floor is their minimum)."""
    # Ids past the daemon's range (the floor writes its maps as root).
    first = str(1000000 + 65536 * (SCALE + 8))
    def once(*flags):
        settle()
        out = subprocess.run([prog, *flags, str(SCALE), first, root, "/bin/sleep", "100000"], check=True,
                             stdout=subprocess.PIPE, text=True, timeout=300)
        return float(out.stdout)
    runs = [(once(), once("-m")) for _ in range(FLOOR_RUNS)]
    return dict(bare=[b for b, _ in runs], mounts=[m for _, m in runs])

def systemd_missing():
    """Why the systemd part cannot run here, and how to make it able to; None when it can."""
    how = (f"apt-get install systemd-container debootstrap, then tests/systemd/tree.sh (it builds {TREE}, "
           "the Debian bookworm tree tests/systemd.rs boots; about a minute); or run the other parts alone: "
           "--only reload,restart,scale")
    missing = [t for t in ("systemd-nspawn", "nsenter", "mount") if shutil.which(t) is None]
    if missing:
        return f"the systemd part needs {', '.join(missing)}, not found: {how}"
    if not (os.access(os.path.join(TREE, "lib/systemd/systemd"), os.X_OK) and os.path.exists(os.path.join(TREE, ".complete"))):
        return f"the systemd part boots {TREE}, which is missing or incomplete (no lib/systemd/systemd or .complete): {how}"
    return None

def children(pid):
    """(pid, comm) of the processes whose parent is pid."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            head, rest = open(f"/proc/{d}/stat").read().rsplit(")", 1)
        except OSError:
            continue
        if int(rest.split()[1]) == pid:
            found.append((int(d), head.split("(", 1)[1]))
    return found

class Container:
    """The Debian tree booted with systemd as PID 1, as tests/systemd.rs does:
    an overlay over the cached tree (which stays clean), nspawn in a cgroup of
    its own in each hierarchy, no machined (--register=no), no host scope
    (--keep-unit); and the host's `out` bound at /out. Used as a `with`."""

    def __init__(self, out):
        self.dir = tempfile.mkdtemp(prefix="paddock-bench-systemd.")
        self.root = os.path.join(self.dir, "root")
        self.out = out
        self.nspawn, self.init, self.cgroups, self.mounted = None, 0, [], False

    def __enter__(self):
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def boot(self):
        for d in ("upper", "work", "root"):
            os.mkdir(os.path.join(self.dir, d))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={TREE},upperdir={self.dir}/upper,workdir={self.dir}/work", self.root], check=True)
        self.mounted = True
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            hierarchies = ["/sys/fs/cgroup"]
        else:
            hierarchies = [h for h in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified") if os.path.isdir(h)]
        for h in hierarchies:
            cg = os.path.join(h, f"paddock-bench-{os.getpid()}")
            os.makedirs(cg, exist_ok=True)
            self.cgroups.append(cg)
        log = open(self.log_path(), "w")
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1", BENCH_CGROUPS=" ".join(self.cgroups))
        # The shell moves itself into those cgroups, then becomes nspawn.
        self.nspawn = subprocess.Popen(
            ["sh", "-c", 'for cg in $BENCH_CGROUPS; do echo 0 > "$cg/cgroup.procs" || exit 1; done; exec "$@"', "sh",
             "systemd-nspawn", "-q", "-D", self.root, "-b", "--register=no", "--keep-unit", "--console=read-only",
             "--link-journal=no", f"--bind={self.out}:/out"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.time() + 30
        while not self.init:
            self.init = next((p for p, comm in children(self.nspawn.pid) if comm == "systemd"), 0)
            if self.nspawn.poll() is not None or time.time() > deadline:
                raise SystemExit(f"systemd: no systemd in the container; nspawn says:\n{self.nspawn_log()}")
            time.sleep(0.05)
        # systemctl answers once systemd's own socket is up; then it waits for the boot.
        deadline = time.time() + 60
        while True:
            state = self.sh("timeout 60 systemctl is-system-running --wait").stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.time() > deadline:
                raise SystemExit(f"systemd: the container's systemd is {state!r}; nspawn says:\n{self.nspawn_log()}")
            time.sleep(0.1)
        self.version = self.ok("systemctl --version").splitlines()[0]

    def log_path(self):
        return os.path.join(self.dir, "nspawn.log")

    def nspawn_log(self):
        try:
            return open(self.log_path()).read()[-4000:]
        except OSError:
            return ""

    def sh(self, script):
        """A shell command inside the container (all of its namespaces)."""
        return subprocess.run(["nsenter", "-t", str(self.init), "-a", "/bin/sh", "-c", script],
                              capture_output=True, text=True)

    def ok(self, script):
        r = self.sh(script)
        if r.returncode != 0:
            raise SystemExit(f"systemd: `{script}` failed: {r.stdout}{r.stderr}")
        return r.stdout.strip()

    def restarts(self, name, sandbox, what):
        """TRIALS restarts of the service `name`, measured as paddock's are."""
        with open(os.path.join(self.root, f"etc/systemd/system/{name}.service"), "w") as f:
            f.write(UNIT.format(name=name, sandbox=sandbox, what=what))
        self.ok(f"systemctl daemon-reload && systemctl start {name}")
        stamps = os.path.join(self.out, f"{name}.restarts")
        deadline = time.time() + 60 + TRIALS * 0.2
        while not os.path.exists(stamps) or len(open(stamps).read().split()) < TRIALS + 1:
            if time.time() > deadline:
                state = self.sh(f"systemctl status --no-pager -n 20 {name}")
                raise SystemExit(f"systemd: the restart loop of {name} stalled:\n{state.stdout}{state.stderr}")
            time.sleep(0.05)
        # Read before the stop, which sets it back to 0.
        nrestarts = int(self.ok(f"systemctl show -p NRestarts --value {name}"))
        self.ok(f"systemctl stop {name}")
        ts = [int(x) for x in open(stamps).read().split()][: TRIALS + 1]
        exits = [int(x) for x in open(os.path.join(self.out, f"{name}.exits")).read().split()][:TRIALS]
        # systemd's own messages, stamped by journald as it receives them (an
        # upper bound of when systemd said them): where its time goes.
        exited, scheduled = [], []
        for line in self.ok(f"journalctl -u {name} -o json --no-pager").splitlines():
            event = json.loads(line)
            message, when = event.get("MESSAGE"), int(event["__REALTIME_TIMESTAMP"]) * 1000
            if not isinstance(message, str) or event.get("_PID") != "1":
                continue
            if "Main process exited" in message:
                exited.append(when)
            elif "Scheduled restart job" in message:
                scheduled.append(when)
        # The i-th exit's messages, matched to the i-th run by time.
        def after(events, t):
            return next((e for e in events if e >= t), None)
        gaps = [(after(exited, e), after(scheduled, e), e, s) for e, s in zip(exits, ts[1:])]
        gaps = [(x, y, e, s) for x, y, e, s in gaps if x is not None and y is not None and x <= y <= s]
        breakdown = [
            ("the run's last instruction -> journald has systemd's \"Main process exited\"", [(x - e) / 1e6 for x, y, e, s in gaps]),
            ("-> journald has \"Scheduled restart job\" (the unit stopped, its cgroup empty, the restart timer fired)", [(y - x) / 1e6 for x, y, e, s in gaps]),
            ("-> the next run's first instruction (the restart job, fork of PID 1, its sandbox if any, the shell and `date`)", [(s - y) / 1e6 for x, y, e, s in gaps]),
        ]
        return dict(exit_to_start_ms=[(b - a) / 1e6 for a, b in zip(exits, ts[1:])],
                    restart_ms=[(b - a) / 1e6 for a, b in zip(ts, ts[1:])],
                    nrestarts=nrestarts,
                    breakdown=breakdown)

    def close(self):
        if self.nspawn is not None:
            if self.init:
                self.sh("systemctl poweroff")
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if self.init:
                    # SIGKILL of a pid namespace's init ends everything in it.
                    try:
                        os.kill(self.init, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.nspawn.kill()
                self.nspawn.wait()
        if self.mounted:
            if subprocess.run(["umount", self.root]).returncode != 0:
                subprocess.run(["umount", "-l", self.root])
        for cg in reversed(self.cgroups):
            # nspawn's and the container's own subgroups first, deepest first.
            for d, _, _ in sorted(os.walk(cg), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        left = [cg for cg in self.cgroups if os.path.exists(cg)]
        left += [l.split()[4] for l in open("/proc/self/mountinfo") if self.dir in l]
        shutil.rmtree(self.dir, ignore_errors=True)
        if left:
            print(f"systemd: left behind: {left}", file=sys.stderr)

def systemd_latencies():
    """The restart measure for a systemd service, sandboxed and not, in one booted container."""
    out = tempfile.mkdtemp(prefix="paddock-bench-systemd-out.")
    os.chmod(out, 0o777)
    try:
        with Container(out) as c:
            sandboxed = c.restarts("bench-sandboxed", SANDBOX, "sandboxed")
            plain = c.restarts("bench-plain", "", "no sandbox options")
            return dict(version=c.version, sandboxed=sandboxed, plain=plain)
    finally:
        shutil.rmtree(out, ignore_errors=True)

def row(name, xs):
    return f"| {name} | {pct(xs, 50):.2f} | {pct(xs, 99):.2f} | {max(xs):.2f} |\n"

def runs(xs):
    """A floor's runs: the least, then every run in order."""
    return f"{min(xs):.2f} s ({', '.join(f'{x:.2f}' for x in xs)})"

def report(res, parts, full):
    kernel = os.uname().release
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    only = "" if full else f" --only {','.join(p for p in PARTS if p in parts)}"
    text = (f"# Supervisor latencies\n\n`bench/daemon.py {TRIALS}{only}` on Linux {kernel}, {os.cpu_count()} CPUs, "
            f"{TRIALS} trials each, a real `paddock daemon` (release build), the host's `/` as rootfs"
            f" (load average at the end: {load}).\n\n"
            "| measure | p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|\n")
    if "reload_ms" in res:
        text += row("reload: rename() to the workload's first instruction", res["reload_ms"])
    if "exit_to_start_ms" in res:
        text += row("restart: the run's last instruction before exit to the next run's first, backoff 0s", res["exit_to_start_ms"])
        text += "".join(row(f"&nbsp;&nbsp;of which: {name}", xs) for name, xs in res["breakdown"])
        text += row("restart, start to start (includes the run itself: a shell, `date` twice and a 150 ms sleep)", res["restart_ms"])
        text += row("floor: the same command restarted by a bare fork/exec/wait loop (bench/restart-floor.c: "
                    "no sandbox, no supervisor), last instruction to next first", res["floor_ms"])
        text += row("floor, sandboxed: the same command, each run cloned by a bare C loop into the sandbox the daemon "
                    "builds for it (bench/restart-floor.c -s: user, mount, pid, uts, ipc, network and cgroup "
                    "namespaces, id maps, the overlay root, /proc, /dev, /tmp, sysfs, loopback up; no init, seccomp, "
                    "record, log or supervisor), last instruction to next first; the least of three runs (p50 "
                    + ", ".join(f"{x:.2f}" for x in res["sandboxed_floor_runs"]) + ")", res["sandboxed_floor_ms"])
        if "prepared_floor_ms" in res:
            text += row("floor of a design paddock does not have, the sandbox prepared ahead: each run's sandbox built "
                        "while the run before runs, given its go when the run before reports its end (its PID 1 a "
                        "minimal init that forks the command and reports; bench/restart-floor.c -p); the least of three "
                        "(p50 " + ", ".join(f"{x:.2f}" for x in res["prepared_floor_runs"]) + ")",
                        res["prepared_floor_ms"])
            text += row("floor of a design paddock does not have, the sandbox kept: one sandbox whose PID 1 forks the "
                        "command again as it exits, reporting to no one (bench/restart-floor.c -k); the least of three "
                        "(p50 " + ", ".join(f"{x:.2f}" for x in res["kept_floor_runs"]) + ")", res["kept_floor_ms"])
    sd = res.get("systemd")
    if sd:
        v = sd["version"].split()[1] if len(sd["version"].split()) > 1 else sd["version"]
        s, plain = sd["sandboxed"], sd["plain"]
        text += row(f"systemd {v} (in nspawn): restart, the run's last instruction before exit to the next run's first, "
                    "Restart=always, RestartSec=0, sandboxed (see the notes)", s["exit_to_start_ms"])
        text += "".join(row(f"&nbsp;&nbsp;of which: {name}", xs) for name, xs in s["breakdown"] if xs)
        text += row(f"systemd {v} (in nspawn): restart, start to start", s["restart_ms"])
        text += row(f"systemd {v} (in nspawn): restart, the same service without the sandbox options", plain["exit_to_start_ms"])
        text += "".join(row(f"&nbsp;&nbsp;of which: {name}", xs) for name, xs in plain["breakdown"] if xs)
        if "exit_to_start_ms" in res:
            a, b = res["exit_to_start_ms"], s["exit_to_start_ms"]
            text += (f"| ratio paddock / systemd {v} (sandboxed), restart, last instruction to next first "
                     f"| {pct(a, 50) / pct(b, 50):.2f} | {pct(a, 99) / pct(b, 99):.2f} | |\n")
    sc = res.get("scale")
    if sc:
        text += (f"| one edit among {SCALE} files: rename() to the new version's first instruction (20 edits) "
                 f"| {pct(sc['edit_ms'], 50):.2f} | {pct(sc['edit_ms'], 99):.2f} | {max(sc['edit_ms']):.2f} |\n")
        text += (f"\nScale, {SCALE} workloads (busybox `sleep` in a busybox rootfs, each in its own slice of 65536 ids):\n\n"
                 "| measure | value |\n|---|---:|\n"
                 f"| {SCALE} manifests written (rename each) | {sc['written']:.2f} s |\n"
                 f"| empty daemon to all {SCALE} running (from the first write) | {sc['all_running']:.2f} s |\n"
                 f"| the daemon's CPU over that ramp | {sc['ramp_cpu']:.2f} s |\n"
                 f"| the same ramp with the daemon's state, logs, workloads directory and the rootfs on a journaled ext4 (a loop "
                 f"device; see the notes): written, all running, the daemon's CPU | {sc['journaled'][0]:.2f} s, "
                 f"{sc['journaled'][1]:.2f} s, {sc['journaled'][2]:.2f} s |\n"
                 f"| floor: the same {SCALE} sandboxes started by a bare C loop (bench/scale-floor.c: namespaces, "
                 f"id maps, the rootfs bound, pivot_root, exec; no supervisor), first clone to last exec "
                 f"| {runs(sc['floor']['bare'])} |\n"
                 f"| floor, with the mounts every sandbox has (/proc, /dev and its devices, devpts, /dev/shm, /tmp, "
                 f"sysfs) and loopback up | {runs(sc['floor']['mounts'])} |\n"
                 f"| daemon RSS, idle, {SCALE} running | {sc['rss']:.1f} MiB |\n"
                 f"| daemon CPU, idle over 60 s (two resyncs) | {sc['idle_cpu']:.3f} % of a core |\n"
                 f"| SIGTERM to exit 0 with all {SCALE} stopped | {sc['shutdown']:.2f} s |\n"
                 f"| `paddock upgrade` to the re-executed daemon's READY=1, {SCALE} running (5 runs: median, max) "
                 f"| {statistics.median(sc['upgrade_ms']):.0f} ms, {max(sc['upgrade_ms']):.0f} ms |\n"
                 f"| kill -9 of the daemon, a new one started to its READY=1 with all {SCALE} adopted (5 runs: median, max) "
                 f"| {statistics.median(sc['adopt_ms']):.0f} ms, {max(sc['adopt_ms']):.0f} ms |\n"
                 f"| the same {SCALE} pids after 5 upgrades and 5 adoptions, restarts counted | "
                 f"{'yes' if sc['same_pids'] else 'NO'}, {sc['restarted']} |\n")
    if sd:
        text += (f"\nsystemd counted {sd['sandboxed']['nrestarts']} restarts of the sandboxed service "
                 f"and {sd['plain']['nrestarts']} of the plain one (NRestarts), {TRIALS} of each measured.\n")
    if full:
        text += ("\nTargets (issue 4): reload p99 under 100 ms; restart p50 under 5 ms; all running in under 10 s, "
                 "RSS under 64 MiB, idle CPU under 1% of a core, one edit applied in under 50 ms. "
                 "Issue 16: restart p50 under 3.5 ms and p99 under 6 ms, all 1000 running in under 2 s.\n")
        text += NOTES
    return text

def main():
    global TRIALS, SCALE
    ap = argparse.ArgumentParser(usage=__doc__.split("Usage: ", 1)[1].split("\n", 1)[0])
    ap.add_argument("trials", nargs="?", type=int, default=TRIALS)
    ap.add_argument("scale", nargs="?", type=int, default=SCALE)
    ap.add_argument("--only", metavar="PARTS", help=f"comma-separated, from {', '.join(PARTS)}; prints the rows, "
                    "does not write bench/RESULTS-daemon.md")
    args = ap.parse_args()
    TRIALS, SCALE = args.trials, args.scale
    parts = PARTS
    if args.only is not None:
        parts = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in parts if x not in PARTS]
        if unknown or not parts:
            ap.error(f"--only: {', '.join(unknown) or 'nothing'} is not one of {', '.join(PARTS)}")
    if os.geteuid() != 0:
        raise SystemExit("bench/daemon.py runs paddock daemons and sandboxes: run it as root")
    if {"restart", "scale"} & set(parts) and not shutil.which("gcc"):
        raise SystemExit("bench/daemon.py compiles bench/restart-floor.c and bench/scale-floor.c for the restart "
                         "and scale measures' floors: apt-get install gcc")
    if "scale" in parts and not shutil.which("mkfs.ext4"):
        raise SystemExit("bench/daemon.py's scale part runs its ramp again on a new journaled ext4: "
                         "apt-get install e2fsprogs (mkfs.ext4)")
    # Before minutes of other measures: a systemd part that cannot run says why now.
    if "systemd" in parts and (why := systemd_missing()):
        raise SystemExit(why)
    res = {}
    if {"reload", "restart", "scale"} & set(parts):
        # The binary as shipped (static-pie); packaging/build-release prints
        # its path. PADDOCK=path times another build instead (to compare two).
        paddock = os.environ.get("PADDOCK")
        if not paddock:
            build = subprocess.run([os.path.join(ROOT, "packaging/build-release"), "--quiet"], check=True, stdout=subprocess.PIPE, text=True)
            paddock = build.stdout.strip()
    if {"reload", "restart"} & set(parts):
        res.update(paddock_latencies(paddock, parts))
    if "systemd" in parts:
        res["systemd"] = systemd_latencies()
    if "scale" in parts:
        res["scale"] = scale(paddock)
        res["scale"]["journaled"] = scale_journaled(paddock)
    text = report(res, parts, args.only is None)
    if args.only is None:
        with open(os.path.join(ROOT, "bench/RESULTS-daemon.md"), "w") as f:
            f.write(text)
        print(text)
    else:
        print(text)
        print("(--only: bench/RESULTS-daemon.md is left as it is)")

if __name__ == "__main__":
    main()
