#!/usr/bin/env python3
"""Times commands interleaved: each round runs every command once, in a
shuffled order, so that all of them meet the same background work.

hyperfine times one command's runs in a block, then the next command's.
The kernel frees network namespaces later, in batches, on its own
threads: what a block pays for them depends on what ran before it, and
the same tool's network namespace was measured at 0.1 ms in one block
and 1.4 ms in another. Interleaved, every tool sees the same.

    bench/interleave.py RUNS OUT.json NAME=COMMAND...

Each command is split like a shell would split it (no shell runs it),
spawned with stdout and stderr on /dev/null and waited for; the time is
from the spawn to the wait's return. 10 warm-up rounds first. Writes
{"results": [{"command": NAME, "times": [seconds...]}]}, as hyperfine's
--export-json does, and fails if any run of any command fails.
"""

import json
import os
import random
import shlex
import shutil
import sys
import time

WARMUP = 10


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    runs, out = int(sys.argv[1]), sys.argv[2]
    commands = {}
    for arg in sys.argv[3:]:
        name, _, command = arg.partition("=")
        argv = shlex.split(command)
        program = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
        if not name or not program:
            sys.exit(f"interleave: cannot run {arg!r}")
        commands[name] = [program] + argv[1:]
    null = os.open(os.devnull, os.O_RDWR)
    quiet = [(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)]

    def once(name):
        argv = commands[name]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=quiet)
        _, status = os.waitpid(pid, 0)
        took = time.perf_counter() - start
        if status != 0:
            sys.exit(f"interleave: {name} failed ({os.waitstatus_to_exitcode(status)}): {shlex.join(argv)}")
        return took

    times = {name: [] for name in commands}
    for round in range(WARMUP + runs):
        order = list(commands)
        random.shuffle(order)
        for name in order:
            took = once(name)
            if round >= WARMUP:
                times[name].append(took)
    with open(out, "w") as f:
        json.dump({"results": [{"command": n, "times": t} for n, t in times.items()]}, f)


if __name__ == "__main__":
    main()
