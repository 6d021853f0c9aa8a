#!/usr/bin/env python3
"""Supervisor latencies, measured on a real `paddock daemon` (root only).

- reload: from rename() of a new manifest into the workloads directory to
  the workload's first instruction (it writes a timestamp), p50 and p99;
- restart: from a workload's exit to its next start with backoff = "0s",
  p50 and p99 (the gap between consecutive start timestamps of a workload
  that exits at once).

Writes bench/RESULTS-daemon.md.   Usage: sudo bench/daemon.py [TRIALS]
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 200

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    paddock = os.path.join(ROOT, "target/release/paddock")
    work = tempfile.mkdtemp(prefix="paddock-bench-daemon.")
    os.chmod(work, 0o755)
    wl, out = os.path.join(work, "wl"), os.path.join(work, "out")
    os.mkdir(wl); os.chmod(wl, 0o755)
    os.mkdir(out); os.chmod(out, 0o777)
    for f in ("passwd", "group"):
        shutil.copy(f"/etc/{f}", os.path.join(work, f))
    for f in ("subuid", "subgid"):
        open(os.path.join(work, f), "w").close()
    p = lambda f: os.path.join(work, f)
    with open(p("paddock.toml"), "w") as c:
        c.write(f'workloads = "{wl}"\nstate_dir = "{p("state")}"\nsocket = "{p("sock")}"\n'
                f'policy_dir = "/nonexistent"\n[remap]\nsubuid = "{p("subuid")}"\nsubgid = "{p("subgid")}"\n'
                f'passwd = "{p("passwd")}"\ngroup = "{p("group")}"\n')
    log = open(p("daemon.log"), "w")
    daemon = subprocess.Popen([paddock, "daemon", "--config", p("paddock.toml")], stderr=log)
    try:
        while not os.path.exists(p("sock")):
            time.sleep(0.01)
        mount = f'[[mounts]]\nsource = "{out}"\ntarget = "/out"\nreadonly = false\n'
        reload_ms = []
        for i in range(TRIALS):
            stamp = os.path.join(out, f"r{i}")
            text = f'command = ["/bin/sh", "-c", "date +%s%N > /out/r{i}; exec sleep 1000"]\n{mount}'
            tmp = os.path.join(wl, f".r{i}.tmp")
            with open(tmp, "w") as f:
                f.write(text)
            t0 = time.time_ns()
            os.rename(tmp, os.path.join(wl, f"r{i}.toml"))
            deadline = time.time() + 10
            while not (os.path.exists(stamp) and os.path.getsize(stamp) > 0):
                if time.time() > deadline:
                    raise SystemExit(f"trial {i}: the workload never started; see {p('daemon.log')}")
                time.sleep(0.0002)
            reload_ms.append((int(open(stamp).read()) - t0) / 1e6)
            os.remove(os.path.join(wl, f"r{i}.toml"))
        # Restart latency: a workload that exits at once and is restarted with no delay.
        stamps = os.path.join(out, "restarts")
        with open(os.path.join(wl, ".loop.tmp"), "w") as f:
            f.write('command = ["/bin/sh", "-c", "date +%s%N >> /out/restarts; exit 1"]\n'
                    f'[restart]\npolicy = "always"\nbackoff = "0s"\nmax_retries = 0\n{mount}')
        os.rename(os.path.join(wl, ".loop.tmp"), os.path.join(wl, "loop.toml"))
        deadline = time.time() + 60
        while not os.path.exists(stamps) or len(open(stamps).read().split()) < TRIALS + 1:
            if time.time() > deadline:
                raise SystemExit("the restart loop stalled")
            time.sleep(0.05)
        os.remove(os.path.join(wl, "loop.toml"))
        ts = [int(x) for x in open(stamps).read().split()][: TRIALS + 1]
        restart_ms = [(b - a) / 1e6 for a, b in zip(ts, ts[1:])]
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    kernel = os.uname().release
    rows = [("reload: rename() to the workload's first instruction", reload_ms),
            ("restart: one start to the next, backoff 0s (includes the run itself, a shell writing a line)", restart_ms)]
    with open(os.path.join(ROOT, "bench/RESULTS-daemon.md"), "w") as f:
        f.write(f"# Supervisor latencies\n\n`bench/daemon.py {TRIALS}` on Linux {kernel}, {os.cpu_count()} CPUs, "
                f"{TRIALS} trials each, a real `paddock daemon` (release build), the host's `/` as rootfs.\n\n"
                "| measure | p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|\n")
        for name, xs in rows:
            f.write(f"| {name} | {pct(xs, 50):.2f} | {pct(xs, 99):.2f} | {max(xs):.2f} |\n")
        f.write("\nTargets (issue 4): reload p99 under 100 ms; restart p50 under 5 ms.\n")
    print(open(os.path.join(ROOT, "bench/RESULTS-daemon.md")).read())

if __name__ == "__main__":
    main()
