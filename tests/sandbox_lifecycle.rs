//! Exit statuses, signals, the init, and teardown: after `paddock run`
//! returns, nothing of the sandbox remains. (Root and user namespaces
//! required.)

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::sandbox::{World, busybox_manifest, cgroup_dirs, stderr, stdout};

#[test]
fn exit_codes_propagate() {
    let w = World::new();
    let m = w.manifest("codes", &busybox_manifest("exit 42", ""));
    assert_eq!(w.run(&[], &m, &[]).status.code(), Some(42));
    assert_eq!(w.run(&[], &m, &["/bin/sh", "-c", "exit 3"]).status.code(), Some(3), "-- CMD replaces the command");
}

#[test]
fn death_by_signal_is_128_plus_the_signal() {
    let w = World::new();
    let out = w.run(&[], &w.manifest("killed", &busybox_manifest("kill -TERM $$; sleep 5", "")), &[]);
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(stderr(&out).contains("killed was killed by SIGTERM"), "{}", stderr(&out));
}

#[test]
fn a_missing_command_is_127_and_a_bad_manifest_is_125() {
    let w = World::new();
    let out = w.run(&[], &w.manifest("nocmd", &busybox_manifest("true", "")), &["/no/such/program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("cannot execute /no/such/program: No such file or directory"), "{}", stderr(&out));
    let out = w.run(&[], &w.manifest("bad", "command = []\n"), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("bad.toml:1:11: error: `command` cannot be empty"), "{}", stderr(&out));
    let out = w.run(&[], &w.manifest("rootless", "command = [\"true\"]\n[rootfs]\npath = \"/nonexistent\"\n"), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("error: rootfs /nonexistent: No such file or directory"), "{}", stderr(&out));
}

#[test]
fn orphans_are_reaped_by_the_init() {
    let w = World::new();
    // Each inner shell exits at once, orphaning its sleep; when the sleeps
    // exit, only the init can reap them. Waited for until no sleep is left
    // (a zombie keeps its name), for 5 s at most; then the zombies counted.
    let script = "for i in 1 2 3; do sh -c 'sleep 0.1 &'; done; n=0; \
         while [ $n -lt 50 ] && grep -q '^Name:.*sleep' /proc/[0-9]*/status 2>/dev/null; do sleep 0.1; n=$((n+1)); done; \
         grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l";
    let out = w.run(&[], &w.manifest("zombies", &busybox_manifest(script, "")), &[]);
    assert_eq!(stdout(&out).trim(), "0", "no zombie is left: {}{}", stdout(&out), stderr(&out));
}

/// `paddock run` of a manifest whose workload prints "ready" first, once
/// it has: the running child and the rest of its stdout.
fn run_until_ready(w: &World, manifest: &std::path::Path) -> (std::process::Child, std::process::ChildStdout) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .arg(manifest)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut seen = [0u8; 6];
    stdout_pipe.read_exact(&mut seen).unwrap();
    assert_eq!(&seen, b"ready\n");
    (child, stdout_pipe)
}

#[test]
fn sigterm_to_paddock_is_forwarded_and_everything_is_torn_down() {
    let w = World::new();
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    let script = "trap 'echo got TERM; exit 7' TERM; sleep 30 & sleep 30 & echo ready; wait";
    // A limit, so that the sandbox has a cgroup to remove (on v1 only limits make one).
    let (mut child, mut stdout_pipe) =
        run_until_ready(&w, &w.manifest("teardown", &busybox_manifest(script, "[resources]\npids = 64\n")));
    let pids = common::sandbox::wait_for_descendants(child.id(), 4);
    assert!(pids.len() >= 4, "init, shell and two sleeps are running: {pids:?}");
    assert!(!cgroup_dirs("teardown").is_empty(), "the sandbox has a cgroup while it runs");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout_pipe.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(7));
    assert!(started.elapsed() < Duration::from_secs(10));
    for pid in &pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} survived");
    }
    assert!(cgroup_dirs("teardown").is_empty(), "the cgroup is removed");
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    assert_eq!(mounts_before, mounts_after, "no mount leaked into the host's namespace");
}

#[test]
fn sigabrt_to_paddock_run_is_ignored_and_the_workload_runs_on() {
    let w = World::new();
    let script = "echo ready; sleep 0.5; echo done; exit 5";
    let (mut child, mut stdout_pipe) = run_until_ready(&w, &w.manifest("abort", &busybox_manifest(script, "")));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGABRT) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout_pipe.read_to_string(&mut rest).unwrap();
    assert_eq!((status.code(), rest.as_str()), (Some(5), "done\n"), "paddock run died of SIGABRT: {status:?}");
}

#[test]
fn stdin_is_attached() {
    let w = World::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .arg(w.manifest("cat", &busybox_manifest("tr a-z A-Z", "")))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
}

#[test]
fn the_workload_starts_with_no_signal_ignored_or_blocked() {
    let w = World::new();
    // No shell in between: a shell sets dispositions of its own.
    let m = w.manifest("signals", &busybox_manifest("true", ""));
    for mode in [&[][..], &["--init-exec"][..]] {
        let out = w.run(mode, &m, &["/bin/grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]);
        assert_eq!(
            stdout(&out),
            "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
            "{mode:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn systemds_variables_never_reach_the_workload() {
    let w = World::new();
    let m = w.manifest("envcheck", &busybox_manifest("env | sort", "env = { MINE = \"yes\" }\n"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .arg(&m)
        .env("NOTIFY_SOCKET", "/run/systemd/notify")
        .env("WATCHDOG_USEC", "1000000")
        .env("LEAKY", "1")
        .output()
        .unwrap();
    let env = stdout(&out);
    assert!(env.contains("MINE=yes\n") && env.contains("HOSTNAME=envcheck\n"), "{env}{}", stderr(&out));
    for leaked in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "LEAKY"] {
        assert!(!env.contains(leaked), "{leaked} leaked into the workload: {env}");
    }
}

#[test]
fn a_paddock_run_killed_with_sigkill_takes_its_sandbox_with_it() {
    let w = World::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .arg(w.manifest("abandoned", &busybox_manifest("sleep 30", "")))
        .spawn()
        .unwrap();
    let pids = common::sandbox::wait_for_descendants(child.id(), 2);
    assert!(pids.len() >= 2, "{pids:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(gone) {
        assert!(Instant::now() < deadline, "the sandbox outlived paddock run: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `check` accepts starts: a large environment (over what one socket
/// message holds) and the most mounts the schema allows; what cannot start
/// (more mounts, an argument over the kernel's limit) `check` refuses,
/// saying the limit.
#[test]
fn a_manifest_that_passes_check_can_start_and_one_that_cannot_is_refused_by_it() {
    let w = World::new();
    // Three variables of 100 KiB: 300 KiB of environment.
    let big = "x".repeat(100 << 10);
    let env = format!("[env]\nA = {big:?}\nB = {big:?}\nC = {big:?}\n");
    let data = w.path("data");
    std::fs::create_dir(&data).unwrap();
    let mounts: String = (0..128)
        .map(|i| format!("[[mounts]]\nsource = {:?}\ntarget = \"/m{i}\"\n", data.display().to_string()))
        .collect();
    let text = busybox_manifest("echo ${#A} ${#B} ${#C}; ls -d /m127", &format!("{env}{mounts}"));
    let out = w.run(&[], &w.manifest("large", &text), &[]);
    assert_eq!(stdout(&out), "102400 102400 102400\n/m127\n", "{}", stderr(&out));

    let more = format!("{mounts}[[mounts]]\nsource = {:?}\ntarget = \"/m128\"\n", data.display().to_string());
    let out = w.run(&[], &w.manifest("toomany", &busybox_manifest("true", &more)), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("`mounts` takes at most 128 items"), "{}", stderr(&out));

    let long = "y".repeat(131_072);
    let out = w.run(&[], &w.manifest("toolong", &busybox_manifest("true", &format!("[env]\nLONG = {long:?}\n"))), &[]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(e.contains("LONG=... is 131077 bytes long") && e.contains("at most 131071 bytes"), "{e}");
}

/// A user outside the workload's ids is a clear error before anything
/// runs, not "cannot execute /bin/sh: Invalid argument".
#[test]
fn a_user_outside_the_slice_is_named_as_such() {
    let w = World::new();
    let out = w.run(&[], &w.manifest("outside", &busybox_manifest("true", "user = 65536\n")), &[]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(e.contains("user 65536 is outside the workload's 65536 ids (0-65535)"), "{e}");
}

/// In the host's pid namespace (a policy that allows it) the init's death
/// does not end what the workload started: a run killed with -9 leaves it
/// in the run's cgroup. The next run kills it and removes that cgroup (as
/// the daemon does at its start).
#[test]
fn what_a_host_pid_run_killed_with_sigkill_left_is_killed_by_the_next_run() {
    let w = World::new();
    let text = busybox_manifest("sleep 4182 & exec sleep 4183", "[namespaces]\npid = \"host\"\n");
    // Its output not this test's: what it leaves would hold the pipe.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .args(["--policy", "privileged"])
        .arg(w.manifest("leaver", &text))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let procs = || -> Vec<u32> {
        let mut pids: Vec<u32> = cgroup_dirs("leaver")
            .iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.sort();
        pids.dedup();
        pids
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    // The init, the workload and the sleep it left in the background.
    while procs().len() < 3 {
        assert!(Instant::now() < deadline, "the sandbox did not start: {:?}", procs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let init = |pid: &u32| std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(b"paddock"));
    // The workload's (another test's run may sweep them first: no matter).
    let left: Vec<u32> = procs().into_iter().filter(|p| !init(p)).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    // The init dies with the run; what its workload started does not.
    let deadline = Instant::now() + Duration::from_secs(5);
    while procs().iter().any(init) {
        assert!(Instant::now() < deadline, "the run's init outlived it: {:?}", procs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = w.run(&[], &w.manifest("next", &busybox_manifest("true", "")), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let gone = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
    };
    assert!(left.iter().all(gone), "what the killed run left still runs: {left:?}");
    assert!(cgroup_dirs("leaver").is_empty(), "{:?}", cgroup_dirs("leaver"));
}
