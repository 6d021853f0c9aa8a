//! `paddock exec`: a command entered into a running workload is one of
//! its processes in every respect, checked from inside and from the host.
//! (Root and user namespaces required.)

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, gone, own_processes, processes};
use common::sandbox::{busybox_manifest, memory_cgroup_dir, syscall_probe};

fn exec(d: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paddock"));
    cmd.arg("exec").arg("--socket").arg(d.path("paddock.sock")).args(args).env("PADDOCK_LEAK", "caller");
    cmd
}

fn run(d: &Daemon, args: &[&str]) -> Output {
    exec(d, args).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A workload that sleeps, with a cgroup (a memory limit) and env. Each
/// test names its own: cgroups are named after workloads, and the tests'
/// daemons share the host's.
fn sleeper(d: &Daemon, name: &str) -> i64 {
    d.write(
        &format!("{name}.toml"),
        &busybox_manifest(
            "exec sleep 1000",
            "env = { GREETING = \"hello\" }\nuser = 0\n[resources]\nmemory = \"64MiB\"\npids = 64\n",
        ),
    );
    d.running_pid(name)
}

fn ns(pid: i64, which: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{which}")).unwrap().display().to_string()
}

fn status_field(pid: i64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with(field)).unwrap_or("").split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
}

#[test]
fn an_exec_is_a_process_of_the_workload_in_every_respect() {
    let mut d = Daemon::setup().start(&[]);
    let init = sleeper(&d, "exec-ids");
    // Running is said at the shell's exec; its own exec of sleep follows.
    d.wait_for("the workload's sleep", |d| !own_processes(d, &["sleep", "1000"]).is_empty());
    let workload = own_processes(&d, &["sleep", "1000"])[0];
    let mut child =
        exec(&d, &["exec-ids", "--", "sleep", "777"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let entered = loop {
        if let Some(p) = processes(&["sleep", "777"]).into_iter().next() {
            break p;
        }
        assert!(Instant::now() < deadline, "the exec'd sleep never appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    // From the host: the workload's namespaces, ids, capabilities, seccomp and cgroup.
    for which in ["user", "mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        assert_eq!(ns(entered, which), ns(init, which), "{which} namespace");
    }
    let w = d.workload("exec-ids").unwrap();
    let host_uid = w["uid_map"]["host_start"].as_u64().unwrap();
    assert_eq!(
        status_field(entered, "Uid:"),
        format!("{host_uid} {host_uid} {host_uid} {host_uid}"),
        "root inside is the slice's first id"
    );
    for field in ["CapEff:", "CapBnd:", "CapPrm:", "Seccomp:", "NoNewPrivs:"] {
        assert_eq!(status_field(entered, field), status_field(workload, field), "{field}");
    }
    assert_eq!(status_field(entered, "Seccomp:"), "2", "the seccomp filter is on");
    let cgroup = |p: i64| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cgroup(entered), cgroup(workload), "the workload's cgroup");
    // An exec'd process is killed when its workload stops.
    assert!(d.paddock(&["stop", "exec-ids"]).status.success());
    let status = child.wait().unwrap();
    assert!(gone(entered), "the exec'd process outlived its workload");
    assert_eq!(status.code(), Some(137), "killed with its sandbox: {status:?}");
    assert_eq!(d.terminate(), 0);
}

/// Fail closed: a sandbox whose init is in a cgroup the daemon does not
/// know of (here moved there from outside) is not entered, rather than
/// entered outside its limits.
#[test]
fn an_exec_where_the_init_is_in_a_cgroup_the_daemon_does_not_know_is_refused() {
    let mut d = Daemon::setup().start(&[]);
    let init = sleeper(&d, "exec-apart");
    let own = memory_cgroup_dir(init).expect("the workload's memory cgroup");
    /// The host's cgroup made for the test, removed whatever happens.
    struct Made(std::path::PathBuf);
    impl Drop for Made {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let elsewhere = Made(own.parent().unwrap().join(format!("exec-apart-elsewhere-{}", std::process::id())));
    std::fs::create_dir(&elsewhere.0).unwrap();
    std::fs::write(elsewhere.0.join("cgroup.procs"), init.to_string()).unwrap();
    let out = run(&d, &["exec-apart", "--", "true"]);
    std::fs::write(own.join("cgroup.procs"), init.to_string()).unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{said}");
    assert!(said.contains("outside its limits") && said.contains("exec-apart-elsewhere"), "{said}");
    let out = run(&d, &["exec-apart", "--", "true"]);
    assert!(out.status.success(), "back in its cgroup, entered again: {}", text(&out.stderr));
    assert_eq!(d.terminate(), 0);
    drop(elsewhere);
    // The daemon's group, which it could not remove at its end while the
    // test's cgroup was in it.
    let _ = std::fs::remove_dir(own.parent().unwrap());
}

#[test]
fn an_exec_gets_the_workloads_environment_and_nothing_of_the_callers() {
    let mut d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-env");
    let out = run(&d, &["exec-env", "--", "sh", "-c", "env; ls /proc/self/fd; echo hostname=$(hostname)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("GREETING=hello"), "{said}");
    assert!(!said.contains("PADDOCK_LEAK"), "the caller's environment leaked in: {said}");
    assert!(said.contains("hostname=exec-env"), "{said}");
    let fds: Vec<&str> = said.lines().filter(|l| l.parse::<u32>().is_ok()).collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "only stdio (and ls's own directory): {said}");
    // --env, --workdir and --user.
    let out = run(
        &d,
        &[
            "--env",
            "GREETING=bye",
            "--workdir",
            "/tmp",
            "--user",
            "1000:1001",
            "exec-env",
            "--",
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(id -u) $(id -g)",
        ],
    );
    assert_eq!(text(&out.stdout).trim(), "bye /tmp 1000 1001", "{}", text(&out.stderr));
    // stdin with -i.
    let mut child =
        exec(&d, &["-i", "exec-env", "--", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"through the pipe\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "through the pipe\n");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn exit_statuses_are_the_commands_and_refusals_are_clear() {
    let mut d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-codes");
    let client = exec(&d, &["exec-codes", "--", "sh", "-c", "exit 7"]).stdin(Stdio::null()).spawn().unwrap();
    let pid = client.id();
    assert_eq!(client.wait_with_output().unwrap().status.code(), Some(7));
    // The daemon's log says who asked, and for what.
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let said = |what: &str| {
        log.lines()
            .any(|l| l.contains(&format!(" {what} workload=exec-codes ")) && l.contains(&format!(" client={pid} ")))
    };
    assert!(said("exec") && said("exec ended"), "{log}");
    assert_eq!(run(&d, &["exec-codes", "--", "sh", "-c", "kill -TERM $$"]).status.code(), Some(143));
    // Without `--`, everything after the name is the command's, options
    // too (it was a usage error, exit 2: helper-103); a mistake in
    // paddock's own command line is 125, never a status of the command's.
    assert_eq!(run(&d, &["exec-codes", "sh", "-c", "exit 6"]).status.code(), Some(6));
    let out = run(&d, &["exec-codes"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("<COMMAND>"), "{}", text(&out.stderr));
    assert_eq!(run(&d, &["--no-such-flag", "exec-codes", "true"]).status.code(), Some(125));
    let out = run(&d, &["exec-codes", "--", "/no/such/thing"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot execute /no/such/thing"), "{}", text(&out.stderr));
    let out = run(&d, &["nosuch", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("no workload \"nosuch\""), "{}", text(&out.stderr));
    assert!(d.paddock(&["stop", "exec-codes"]).status.success());
    d.wait_for("exec-codes stopped", |d| d.workload("exec-codes").is_some_and(|w| w["state"] == "stopped"));
    let out = run(&d, &["exec-codes", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("exec-codes is stopped, not running"), "{}", text(&out.stderr));
    assert_eq!(d.terminate(), 0);
}

#[test]
fn with_a_tty_the_command_has_a_terminal_its_size_and_ctrl_c() {
    let mut d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-tty");
    let size = nix::pty::Winsize { ws_row: 33, ws_col: 101, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = exec(
        &d,
        &[
            "-it",
            "exec-tty",
            "--",
            "sh",
            "-c",
            "stty size; trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 1; done",
        ],
    )
    .stdin(slave())
    .stdout(slave())
    .stderr(slave())
    .spawn()
    .unwrap();
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    let mut seen = String::new();
    let read_until = |master: &mut std::fs::File, seen: &mut String, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.contains(what) {
            assert!(Instant::now() < deadline, "never saw {what:?} in {seen:?}");
            let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&*master), nix::poll::PollFlags::POLLIN)];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)).unwrap() > 0 {
                let mut buf = [0u8; 256];
                let n = master.read(&mut buf).unwrap();
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    read_until(&mut master, &mut seen, "ready");
    assert!(seen.contains("33 101"), "the terminal's size: {seen:?}");
    // Ctrl-C, as a terminal sends it: through the workload's own terminal.
    master.write_all(b"\x03").unwrap();
    read_until(&mut master, &mut seen, "got-int");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{seen:?}");
    let _ = pty.master.as_raw_fd();
    assert_eq!(d.terminate(), 0);
}

#[test]
fn ids_outside_the_slice_are_refused_and_never_leave_the_hosts_root() {
    let mut d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-ids2");
    // -1 means "unchanged" to setresuid: it must never leave the daemon's host uid 0.
    for user in ["4294967295", "0:4294967295", "65536", "1000:70000"] {
        let out = run(&d, &["--user", user, "exec-ids2", "--", "sh", "-c", "grep -E '^(Uid|Gid):' /proc/self/status"]);
        assert_eq!(out.status.code(), Some(125), "--user {user}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("outside exec-ids2's ids (0 to 65535)"), "{}", text(&out.stderr));
    }
    // Descriptors that are not streams are refused (a directory would be a
    // way out), nor a device that is the host's (the kernel's log here);
    // /dev/null is fine.
    let request = "{\"cmd\":\"exec\",\"name\":\"exec-ids2\",\"command\":[\"true\"]}\n";
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let ask = |stdin: &std::fs::File| {
        let fds = [stdin.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()];
        let stream = common::daemon::connect_sending(&d, request.as_bytes(), &fds);
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut answer).unwrap();
        answer
    };
    let answer = ask(&std::fs::File::open("/").unwrap());
    assert!(answer.contains("descriptor 0 is not a pipe, socket, terminal or /dev/null"), "{answer}");
    let answer = ask(&std::fs::File::open("/dev/kmsg").expect("this test needs /dev/kmsg (a VM's, not a container's)"));
    assert!(answer.contains("descriptor 0 is not a pipe, socket, terminal or /dev/null"), "{answer}");
    let answer = ask(&std::fs::File::open("/dev/null").unwrap());
    assert!(answer.contains("\"entered\""), "{answer}");
    drop(out_r);
    assert_eq!(d.terminate(), 0);
}

#[test]
fn without_a_tty_signals_to_paddock_exec_reach_the_command() {
    use std::io::BufRead;
    let mut d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-sig");
    let mut child =
        exec(&d, &["exec-sig", "--", "sh", "-c", "trap 'exit 9' INT; echo ready; while :; do sleep 0.1; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(
        child.wait().unwrap().code(),
        Some(9),
        "Ctrl-C reached the command, whose exit status is paddock exec's"
    );
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_client_gone_hangs_up_what_its_command_started() {
    // A shell's background job is in the shell's process group: hung up
    // with it when the client goes, not left running in the workload.
    let mut d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-gone");
    let mut client = exec(&d, &["exec-gone", "--", "sh", "-c", "sleep 779 & wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_for("the background sleep", |_| !processes(&["sleep", "779"]).is_empty());
    let background = processes(&["sleep", "779"])[0];
    client.kill().unwrap();
    client.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(background) {
        assert!(Instant::now() < deadline, "the background sleep {background} outlived its exec's client");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.terminate(), 0);
}

#[test]
fn an_exec_ends_with_the_daemon_that_served_it() {
    // The daemon is killed while a command it entered runs: nothing waits
    // for that command any more, so it is hung up (and killed if it stays).
    let d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-orphan");
    let mut client =
        exec(&d, &["exec-orphan", "--", "sleep", "778"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    d.wait_for("the entered sleep", |_| !processes(&["sleep", "778"]).is_empty());
    let entered = processes(&["sleep", "778"])[0];
    let mut d = d;
    d.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(entered) {
        assert!(Instant::now() < deadline, "the entered command {entered} outlived the daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.wait();
    // A successor adopts the workload, and stops it with itself.
    let _d = d.start(&[]);
}

/// Without -t, what the command writes reaches the caller's terminal with
/// its control characters escaped (it cannot set the clipboard or the
/// title, or erase what was shown); --raw, or a pipe, passes them on.
#[test]
fn on_a_terminal_without_tty_the_commands_control_characters_are_escaped() {
    let d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-escape");
    let shown = |extra: &[&str]| {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut args = extra.to_vec();
        args.extend(["exec-escape", "--", "printf", "title\\033]0;pwned\\007 clip\\033]52;c;aGk=\\007\\n"]);
        let status =
            exec(&d, &args).stdin(Stdio::null()).stdout(Stdio::from(pty.slave.try_clone().unwrap())).status().unwrap();
        assert!(status.success());
        drop(pty.slave);
        String::from_utf8_lossy(&common::read_until_hangup(pty.master)).into_owned()
    };
    let escaped = shown(&[]);
    assert!(escaped.contains("title\\x1b]0;pwned\\x07 clip\\x1b]52;c;aGk=\\x07"), "{escaped:?}");
    assert!(!escaped.contains('\x1b'), "{escaped:?}");
    let raw = shown(&["--raw"]);
    assert!(raw.contains("title\x1b]0;pwned\x07"), "{raw:?}");
    let piped = run(&d, &["exec-escape", "--", "printf", "a\\033[2Kb"]);
    assert_eq!(piped.stdout, b"a\x1b[2Kb", "a pipe gets the bytes as they are");
}

/// Keyrings are not namespaced: an exec into an unconfined workload (no
/// filter keeps it from keyrings) joins a session keyring of its own,
/// never the daemon's, which /proc/keys would list it possessing.
#[test]
fn an_exec_into_an_unconfined_workload_has_a_session_keyring_of_its_own() {
    // The daemon's: one this thread joins first, which the daemon started
    // from it inherits (a test run without a login session has none).
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) takes no memory but
    // the null name.
    let daemons = unsafe { libc::syscall(libc::SYS_keyctl, 1, std::ptr::null::<libc::c_char>()) };
    assert!(daemons > 0, "cannot join a session keyring: {}", std::io::Error::last_os_error());
    let d = Daemon::setup();
    d.configure("policy_dir", "policies = [\"privileged\"]\npolicy_dir");
    let d = d.start(&[]);
    let probe = syscall_probe(&d.path("probe"));
    let mount = format!("[[mounts]]\nsource = {:?}\ntarget = \"/probe\"\n", probe.display().to_string());
    d.write(
        "keyring.toml",
        &busybox_manifest("exec sleep 1000", &format!("{mount}[security]\nseccomp = \"unconfined\"\n")),
    );
    d.running_pid("keyring");
    let out = run(&d, &["keyring", "--", "/probe/syscalls"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    let line = said.lines().find_map(|l| l.strip_prefix("session_keyring ")).unwrap_or_else(|| panic!("{said}"));
    let ring: i64 = line.parse().unwrap_or_else(|_| panic!("no session keyring: {line}"));
    assert_ne!(ring, daemons, "the exec has the daemon's session keyring");
}

/// Exec clients that never read their answer do not hold every exec
/// session: a refusal quotes a name only as far as a name may go. (A 64
/// KiB name of control characters made a refusal larger than the socket
/// holds, and 32 such clients held every session for as long as they
/// stayed. An answer not taken within the write timeout is let go too,
/// which this test does not reach.)
#[test]
fn exec_clients_that_never_read_do_not_hold_the_sessions() {
    let d = Daemon::setup().start(&[]);
    sleeper(&d, "exec-unread");
    let name = "\u{7f}".repeat(65_000 / 2);
    let request = format!("{}\n", serde_json::json!({"cmd": "exec", "name": name, "command": ["true"]}));
    let pipes: Vec<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> =
        (0..3).map(|_| nix::unistd::pipe().unwrap()).collect();
    let fds = [pipes[0].0.as_raw_fd(), pipes[1].1.as_raw_fd(), pipes[2].1.as_raw_fd()];
    let stuck: Vec<std::os::unix::net::UnixStream> =
        (0..32).map(|_| common::daemon::connect_sending(&d, request.as_bytes(), &fds)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let out = run(&d, &["exec-unread", "--", "/bin/echo", "in"]);
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "in\n".to_owned()), "{}", text(&out.stderr));
    drop(stuck);
}

/// The process that enters holds nothing the daemon inherited: a
/// descriptor left without FD_CLOEXEC by whatever started the daemon
/// would be open through the command's chdir and execve, where a workdir
/// the workload replaced by a link to /proc/self/fd/N leads out of the
/// sandbox (runc's CVE-2024-21626).
#[test]
fn the_entering_process_holds_no_descriptor_the_daemon_inherited() {
    let mut d = Daemon::setup();
    d.stray_fd = true;
    let mut d = d.start(&[]);
    sleeper(&d, "exec-stray");
    let daemon = d.child.as_ref().unwrap().id();
    let stray = std::fs::read_link(format!("/proc/{daemon}/fd/7")).unwrap();
    assert!(stray.ends_with("out/daemon.log"), "the daemon's stray descriptor: {}", stray.display());
    let mut child =
        exec(&d, &["exec-stray", "--", "sleep", "778"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let entered = loop {
        if let Some(p) = processes(&["sleep", "778"]).into_iter().next() {
            break p;
        }
        assert!(Instant::now() < deadline, "the exec'd sleep never appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    let enter = status_field(entered, "PPid:");
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{enter}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(
        !held.iter().any(|f| std::path::Path::new(f) == stray),
        "`paddock __enter` ({enter}) holds the daemon's {}: {held:?}",
        stray.display()
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(d.terminate(), 0);
}

/// An exec into a workload in the host's pid namespace runs: its entering
/// process is its command's parent as the command sees it (from a pid
/// namespace of the workload's own it sees none), checked once the
/// command's parent-death signal is set.
#[test]
fn an_exec_into_a_workload_in_the_hosts_pid_namespace_runs() {
    let d = Daemon::setup();
    d.configure("policy_dir", "policies = [\"privileged\"]\npolicy_dir");
    let mut d = d.start(&[]);
    d.write("exec-hostpid.toml", "command = [\"/bin/sleep\", \"1014\"]\n[namespaces]\npid = \"host\"\n");
    d.running_pid("exec-hostpid");
    let out = run(&d, &["exec-hostpid", "--", "/bin/sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(d.terminate(), 0);
}
