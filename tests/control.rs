//! The operator's commands against a real daemon: `status [NAME]`, `logs`,
//! `start`/`stop`/`restart`, `reload`, `plan`, the metrics endpoint, and
//! what each says when the daemon is down. (Root and user namespaces
//! required.)

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{Daemon, SLEEPER, alive};
use serde_json::Value;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn status_shows_a_table_json_and_everything_about_one_workload() {
    let d = Daemon::setup().start(&[]);
    d.write("alpha.toml", SLEEPER);
    d.write("beta.toml", "command = [\"/bin/sleep\", \"1001\"]\nenv = { MODE = \"x\" }\n");
    let pid = d.running_pid("alpha");
    d.running_pid("beta");

    let table = d.paddock(&["status"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("NAME   STATE    PID"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("alpha  running  ") && l.contains(&pid.to_string())), "{text}");
    assert!(!text.contains('\x1b'), "no colour off a terminal");

    let json: Vec<Value> = serde_json::from_slice(&d.paddock(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json.len(), 2);
    for key in ["name", "state", "pid", "uid_map", "gid_map", "restarts", "last_exit", "error", "manifest", "held"] {
        assert!(json[0].get(key).is_some(), "{key} in {}", json[0]);
    }

    let one = stdout(&d.paddock(&["status", "beta"]));
    assert!(one.starts_with("beta: running\n"), "{one}");
    assert!(one.contains("effective manifest:\n") && one.contains("MODE = \"x\""), "{one}");
    assert!(one.contains("hostname = \"beta\""), "the defaults are filled in:\n{one}");
    assert!(
        one.contains("recent changes:\n") && one.contains("manifest added") && one.contains("started (pid"),
        "{one}"
    );
    let one: Value = serde_json::from_slice(&d.paddock(&["status", "beta", "--json"]).stdout).unwrap();
    assert_eq!(one["name"], "beta");
    assert!(one["effective_manifest"].as_str().unwrap().contains("command = [\"/bin/sleep\", \"1001\"]"), "{one}");
    assert!(one["changes"].as_array().unwrap().len() >= 2);
    assert!(one["log"].as_str().unwrap().ends_with("logs/beta.log"));

    let unknown = d.paddock(&["status", "gamma"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no workload \"gamma\""), "{}", stderr(&unknown));
}

#[test]
fn logs_prints_the_last_lines_and_follows_across_a_restart() {
    let d = Daemon::setup().start(&[]);
    d.write(
        "chatty.toml",
        "command = [\"/bin/sh\", \"-c\", \"echo one; echo two >&2; echo three; exec sleep 1000\"]\n[restart]\nbackoff = \"10ms\"\n",
    );
    let first = d.running_pid("chatty");
    let log = d.path("state/logs/chatty.log");
    d.wait_for("three lines", |_| std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 3));

    assert_eq!(stdout(&d.paddock(&["logs", "chatty"])), "one\ntwo\nthree\n");
    assert_eq!(stdout(&d.paddock(&["logs", "chatty", "-n", "2"])), "two\nthree\n");
    assert_eq!(stdout(&d.paddock(&["logs", "chatty", "-n", "0"])), "");
    let stamped = stdout(&d.paddock(&["logs", "chatty", "--timestamps", "-n", "1"]));
    let (stamp, text) = stamped.trim_end().split_once(' ').unwrap();
    assert!(paddock::timefmt::parse_rfc3339(stamp).is_some() && text == "three", "{stamped}");
    assert_eq!(stdout(&d.paddock(&["logs", "chatty", "--since", "1h"])), "one\ntwo\nthree\n");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(stdout(&d.paddock(&["logs", "chatty", "--since", "1s"])), "", "older lines are left out");

    let mut follower = common::Killed(
        Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["logs", "chatty", "-f", "-n", "1", "--socket"])
            .arg(d.path("paddock.sock"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let followed = common::output_lines(follower.0.stdout.take().unwrap());
    let line = || followed.recv_timeout(Duration::from_secs(15)).expect("the follower printed a line within 15 s");
    // The follower has printed the last line before the restart begins, so
    // what it prints next is the next run's.
    assert_eq!(line(), "three", "the last line first");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    d.wait_for("a second run", |d| d.workload("chatty").is_some_and(|w| w["restarts"] == 1 && w["state"] == "running"));
    let next: Vec<String> = (0..3).map(|_| line()).collect();
    assert_eq!(next, ["one", "two", "three"], "then the next run's");
    // Truncated in place (`truncate -s 0`, logrotate's copytruncate): read
    // from its start again, though the next run writes less than was read.
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    let second = d.running_pid("chatty");
    // SAFETY: as above.
    unsafe { libc::kill(second as i32, libc::SIGKILL) };
    let next: Vec<String> = (0..3).map(|_| line()).collect();
    assert_eq!(next, ["one", "two", "three"], "the run after the truncation");
    drop(follower);

    let none = d.paddock(&["logs", "nobody"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no workload \"nobody\""), "{}", stderr(&none));
}

#[test]
fn stop_holds_a_workload_until_start_or_a_manifest_change() {
    let d = Daemon::setup().start(&[]);
    d.write("held.toml", SLEEPER);
    let pid = d.running_pid("held");
    let out = d.paddock(&["stop", "held"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("stays stopped until `paddock start held`"), "{}", stdout(&out));
    // As systemctl stop: it returns once the workload has stopped.
    assert!(stdout(&out).ends_with("held stopped\n"), "{}", stdout(&out));
    let w = d.workload("held").unwrap();
    assert!(w["state"] == "stopped" && w["held"] == true, "{w}");
    assert!(!alive(pid));
    assert!(stdout(&d.paddock(&["status"])).contains("stopped (held)"));
    assert_eq!(w["last_exit"], "SIGTERM", "{w}");
    // Its log line says how long the run it stopped ran.
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let ended = log.lines().find(|l| l.contains("exited") && l.contains("held")).unwrap();
    assert!(ended.contains("ran_for=\"0.") || ended.contains("ran_for=\"1."), "{ended}");
    // A rescan with no change to the manifest keeps it stopped.
    assert_eq!(stdout(&d.paddock(&["reload"])), "nothing changed\n");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.workload("held").unwrap()["state"], "stopped");
    // So does a daemon restart: the hold is kept in the state directory.
    let mut d = d;
    assert_eq!(d.terminate(), 0);
    let d = d.start(&[]);
    std::thread::sleep(Duration::from_millis(200));
    let w = d.workload("held").unwrap();
    // How the run it stopped ended is still shown.
    assert!(w["held"] == true && w["last_exit"] == "SIGTERM", "{w}");
    let out = d.paddock(&["start", "held"]);
    let again = d.running_pid("held");
    assert_eq!(stdout(&out), format!("starting held\nheld running (pid {again})\n"), "{}", stderr(&out));
    // A manifest change releases a hold too.
    d.paddock(&["stop", "held"]);
    d.wait_for("held again", |d| d.workload("held").is_some_and(|w| w["state"] == "stopped"));
    d.write("held.toml", "command = [\"/bin/sleep\", \"1001\"]\n");
    let third = d.running_pid("held");
    assert!(third != again && d.workload("held").unwrap()["held"] == false);
    // Removing the manifest ends a hold too: the same file, written again, runs.
    d.paddock(&["stop", "held"]);
    d.wait_for("held once more", |d| d.workload("held").is_some_and(|w| w["state"] == "stopped" && w["held"] == true));
    std::fs::remove_file(d.path("wl/held.toml")).unwrap();
    d.wait_for("held forgotten", |d| d.workload("held").is_none());
    d.write("held.toml", "command = [\"/bin/sleep\", \"1001\"]\n");
    d.running_pid("held");

    let unknown = d.paddock(&["stop", "ghost"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no workload \"ghost\": there is no valid manifest"), "{}", stderr(&unknown));
}

#[test]
fn restart_revives_a_failed_workload() {
    let d = Daemon::setup();
    let flag = d.path("flag");
    std::fs::create_dir(&flag).unwrap();
    std::fs::set_permissions(&flag, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = d.start(&[]);
    d.write(
        "phoenix.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"[ -e /flag/ok ] && exec sleep 1000; exit 3\"]\n[restart]\nmax_retries = 1\nbackoff = \"10ms\"\n[[mounts]]\nsource = {:?}\ntarget = \"/flag\"\n",
            flag.display().to_string()
        ),
    );
    d.wait_for("phoenix failed", |d| d.workload("phoenix").is_some_and(|w| w["state"] == "failed"));
    std::fs::write(flag.join("ok"), "").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.workload("phoenix").unwrap()["state"], "failed", "failed stays failed by itself");
    let out = d.paddock(&["restart", "phoenix"]);
    let pid = d.running_pid("phoenix");
    assert_eq!(stdout(&out), format!("restarting phoenix\nphoenix running (pid {pid})\n"), "{}", stderr(&out));
    assert_eq!(d.workload("phoenix").unwrap()["restarts"], 0, "the count starts over");
    // Restart of a running workload: a new sandbox.
    let before = d.running_pid("phoenix");
    d.paddock(&["restart", "phoenix"]);
    d.wait_for("a new sandbox", |d| {
        d.workload("phoenix").is_some_and(|w| w["state"] == "running" && w["pid"].as_i64() != Some(before))
    });
    assert!(!alive(before));
}

/// A restart whose run begins and ends before the client looks again
/// says how it ended and where its output is (its name, not a
/// placeholder), not that it did not start.
#[test]
fn a_restart_whose_run_ends_says_how_it_ended() {
    let d = Daemon::setup().start(&[]);
    d.write("crash.toml", "command = [\"/bin/sh\", \"-c\", \"exit 3\"]\n[restart]\nbackoff = \"5s\"\n");
    d.wait_for("crash in backoff", |d| d.workload("crash").is_some_and(|w| w["state"] == "backoff"));
    let out = d.paddock(&["restart", "crash"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "crash did not stay up: its run ended (3); `paddock logs crash` shows its output (it will be tried again)"
        ),
        "{}",
        stderr(&out)
    );
    // So it does when its file was edited into an invalid one meanwhile:
    // the last valid version ran, and how it ended is what happened (it
    // said the file's error, as if that had kept it from starting).
    d.write("crash.toml", "command = [\"/bin/sh\", \"-c\", \"exit 3\"]\n[restart]\nbackoff = \"5s\"\nuser = \"x\"\n");
    d.wait_for("crash's file invalid", |d| d.workload("crash").is_some_and(|w| w["file_invalid"] == true));
    let out = d.paddock(&["restart", "crash"]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(said.contains("crash did not stay up: its run ended (3)"), "{said}");
    assert!(!said.contains("did not start") && !said.contains("unknown key"), "{said}");
    // And when that last valid version could not start (its mount's
    // source gone), it says why, not the file's error nor an old end.
    let source = d.path("out/data");
    std::fs::create_dir(&source).unwrap();
    let mounted = format!(
        "command = [\"/bin/sleep\", \"1000\"]\n[[mounts]]\nsource = {:?}\ntarget = \"/data\"\n",
        source.display().to_string()
    );
    d.write("mounted.toml", &mounted);
    d.running_pid("mounted");
    d.write("mounted.toml", &format!("{mounted}bogus = 1\n"));
    d.wait_for("mounted's file invalid", |d| d.workload("mounted").is_some_and(|w| w["file_invalid"] == true));
    std::fs::remove_dir(&source).unwrap();
    let out = d.paddock(&["restart", "mounted"]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(said.contains(&source.display().to_string()) && !said.contains("bogus"), "{said}");
    let w = d.workload("mounted").unwrap();
    assert!(w["start_error"].as_str().is_some_and(|e| e.contains("out/data")), "{w}");
}

/// Mounts `from` over `onto` for the guard's life: changes that inotify
/// on `onto` cannot see, as on NFS, where `paddock reload` is the way.
fn bind_mount(from: &std::path::Path, onto: &std::path::Path) -> common::Mounted {
    nix::mount::mount(Some(from), onto, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    common::Mounted(onto.to_owned())
}

#[test]
fn reload_rescans_and_reports_what_changed() {
    let d = Daemon::setup();
    let hidden = d.path("nfs");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = d.start(&[]);
    std::fs::write(hidden.join("one.toml"), SLEEPER).unwrap();
    std::fs::write(hidden.join("two.toml"), SLEEPER).unwrap();
    let _mount = bind_mount(&hidden, &d.path("wl"));
    // A file beside wl/, in the parent the daemon watches for a swap of wl
    // itself, is not a change to the workloads: no rescan.
    std::fs::write(d.path("beside.txt"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        d.status().is_empty(),
        "inotify saw nothing: {}",
        std::fs::read_to_string(d.path("out/daemon.log")).unwrap()
    );
    assert_eq!(stdout(&d.paddock(&["reload"])), "started one (manifest added)\nstarted two (manifest added)\n");
    d.running_pid("one");
    // That reload moved the watch onto the mounted directory (a replaced
    // directory is watched again). Another mount over it, made ready
    // first, is again a change no inotify event reports.
    let hidden2 = d.path("nfs2");
    std::fs::create_dir(&hidden2).unwrap();
    std::fs::set_permissions(&hidden2, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(hidden2.join("one.toml"), "command = [\"/bin/sleep\", \"1001\"]\n").unwrap();
    std::fs::write(hidden2.join("bad.toml"), "command = \"not a list\"\n").unwrap();
    let _mount2 = bind_mount(&hidden2, &d.path("wl"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.workload("two").unwrap()["state"], "running", "nothing applied before the reload");
    let out = stdout(&d.paddock(&["reload"]));
    let expected_bad = format!("invalid: {}/bad.toml:1:11: error: `command` must be an array", d.path("wl").display());
    assert!(out.starts_with("restarted one (manifest changed: command)\nstopped two (manifest removed)\n"), "{out}");
    assert!(out.contains(&expected_bad), "{out}");
    // Nothing changed since, but the file is still invalid: reload says so.
    let again = stdout(&d.paddock(&["reload"]));
    assert!(again.starts_with(&expected_bad), "{again}");
    std::fs::remove_file(hidden2.join("bad.toml")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Seen by the watch (now on the new directory) or by this reload.
    let last = stdout(&d.paddock(&["reload"]));
    assert!(last == "nothing changed\n" || last.is_empty(), "{last}");
}

/// A file invalid because of the host (its mount source missing) is
/// validated again at each full rescan: logged once while nothing changes,
/// and started by the reload after the source is made.
#[test]
fn a_reload_starts_what_the_host_has_since_made_valid() {
    let d = Daemon::setup().start(&[]);
    let data = d.path("data");
    let manifest = format!("command = [\"/bin/sleep\", \"1000\"]\n[[mounts]]\nsource = {data:?}\ntarget = \"/data\"\n");
    d.write("needs.toml", &manifest);
    let logged =
        |d: &Daemon| std::fs::read_to_string(d.path("out/daemon.log")).unwrap().matches("invalid manifest").count();
    d.wait_for("needs.toml refused", |d| logged(d) == 1);
    let out = stdout(&d.paddock(&["reload"]));
    assert!(out.starts_with("invalid: ") && out.contains("mount source"), "{out}");
    assert_eq!(logged(&d), 1, "validated again and unchanged: not logged again");
    std::fs::create_dir(&data).unwrap();
    let out = stdout(&d.paddock(&["reload"]));
    assert!(out.starts_with("started needs"), "{out}");
    d.running_pid("needs");
}

#[test]
fn plan_shows_what_a_directory_would_do_and_does_nothing() {
    let d = Daemon::setup().start(&[]);
    d.write("keep.toml", SLEEPER);
    d.write("edit.toml", SLEEPER);
    d.write("drop.toml", SLEEPER);
    let pids: Vec<i64> = ["keep", "edit", "drop"].iter().map(|n| d.running_pid(n)).collect();

    let now = d.paddock(&["plan"]);
    assert_eq!((now.status.code(), stdout(&now)), (Some(0), "nothing to do\n".to_owned()), "{}", stderr(&now));

    let next = d.path("next");
    std::fs::create_dir(&next).unwrap();
    // Reworded: comments and spacing only, the same manifest once read.
    std::fs::write(next.join("keep.toml"), format!("# kept as it is\n{}", SLEEPER.replace(", ", ",\n    "))).unwrap();
    std::fs::write(next.join("edit.toml"), "command = [\"/bin/sleep\", \"5\"]\nhostname = \"e\"\n").unwrap();
    std::fs::write(next.join("add.toml"), SLEEPER).unwrap();
    std::fs::write(next.join("bad.toml"), "command = [\"/bin/sleep\"]\nrestart = { polcy = \"always\" }\n").unwrap();
    let out = d.paddock(&["plan", next.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "an invalid file: exit 1");
    let text = stdout(&out);
    let want = "would start add (manifest added)\nwould stop drop (manifest removed)\nwould restart edit (manifest changed: command and hostname)\n";
    assert!(text.starts_with(want), "{text}");
    assert!(!text.contains("keep"), "reworded, nothing to do: {text}");
    assert!(
        text.contains(&format!("invalid: {}/bad.toml:2:13: error: unknown key `polcy` in [restart]", next.display())),
        "{text}"
    );
    let after: Vec<i64> = ["keep", "edit", "drop"].iter().map(|n| d.running_pid(n)).collect();
    assert_eq!(after, pids, "plan changes nothing");
    assert!(d.workload("add").is_none());

    // Asked while a save renames a file away and writes it again, plan
    // waits for it, as the daemon's rescan does: nothing to do.
    let kept = d.path("wl/keep.toml");
    std::fs::rename(&kept, d.path("wl/keep.toml~")).unwrap();
    let back = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(kept, SLEEPER).unwrap();
    });
    let during = d.paddock(&["plan"]);
    back.join().unwrap();
    assert_eq!(stdout(&during), "nothing to do\n", "{}", stderr(&during));
}

/// `plan` refuses what the daemon would: a workload whose file in the
/// planned directory is invalid runs on with the version it has, and
/// keeps its place in the start order against the other files.
#[test]
fn plan_refuses_what_a_running_version_holds_as_the_daemon_does() {
    let d = Daemon::setup().start(&[]);
    d.write("b.toml", SLEEPER);
    d.write("a.toml", &format!("{SLEEPER}after = [\"b\"]\n"));
    d.running_pid("a");
    let next = d.path("next");
    std::fs::create_dir(&next).unwrap();
    std::fs::write(next.join("a.toml"), "command = \"not a list\"\n").unwrap();
    std::fs::write(next.join("b.toml"), format!("{SLEEPER}after = [\"a\"]\n")).unwrap();
    let out = d.paddock(&["plan", next.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("would restart b"), "b's edit closes a cycle through a, which runs on: {text}");
    assert!(text.contains("b.toml:2:10: error: start order goes round in a circle"), "{text}");
    // A directory the daemon would refuse (its group may write it): nothing of it planned.
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = d.paddock(&["plan", next.to_str().unwrap()]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("writable by") && said.contains("nothing of it would be applied"), "{said}");
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
    // And the daemon, given that directory's files, does the same.
    std::fs::copy(next.join("a.toml"), d.path("wl/a.toml")).unwrap();
    std::fs::copy(next.join("b.toml"), d.path("wl/b.toml")).unwrap();
    d.wait_for("b refused", |d| {
        d.workload("b").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("goes round in a circle")))
    });
}

#[test]
fn every_client_command_says_when_the_daemon_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    for args in [
        &["status"][..],
        &["logs", "web"],
        &["start", "web"],
        &["stop", "web"],
        &["restart", "web"],
        &["reload"],
        &["plan"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_paddock")).args(args).arg("--socket").arg(&socket).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("paddock {}: cannot reach the daemon at {}", args[0], socket.display()))
                && err.contains("is the daemon running?"),
            "{args:?}: {err}"
        );
    }
}

/// A socket root does not listen on (PADDOCK_SOCKET naming a path another
/// user made first, in /tmp after a reboot) is sent nothing: no request,
/// no environment, none of the streams or the terminal `exec` hands over.
#[test]
fn a_socket_root_does_not_listen_on_is_sent_nothing() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("paddock.sock");
    let clients: [&[&str]; 3] =
        [&["status"], &["status", "--watch"], &["exec", "--env", "TOKEN=secret", "web", "--", "true"]];
    let (ready, listening) = std::sync::mpsc::channel();
    let path = socket.clone();
    let listener = std::thread::spawn(move || {
        // SAFETY: system calls with integer arguments. Made raw, they change
        // this thread's credentials only (libc's wrappers would change every
        // thread's), and listen() records the caller's.
        let dropped = unsafe {
            libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534) == 0
                && libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) == 0
        };
        assert!(dropped, "dropping this thread's ids: {}", std::io::Error::last_os_error());
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        ready.send(()).unwrap();
        let mut got = Vec::new();
        for _ in 0..clients.len() {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (mut bytes, mut fds) = (0, 0);
            loop {
                let mut buf = [0u8; 4096];
                let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 8]);
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let Ok(msg) = nix::sys::socket::recvmsg::<()>(
                    stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
                ) else {
                    break;
                };
                for c in msg.cmsgs().into_iter().flatten() {
                    if let nix::sys::socket::ControlMessageOwned::ScmRights(received) = c {
                        fds += received.len();
                    }
                }
                if msg.bytes == 0 {
                    break;
                }
                bytes += msg.bytes;
            }
            got.push((bytes, fds));
        }
        got
    });
    listening.recv().unwrap();
    for args in clients {
        let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .arg(args[0])
            .arg("--socket")
            .arg(&socket)
            .args(&args[1..])
            .output()
            .unwrap();
        let expected = if args[0] == "exec" { 125 } else { 1 };
        assert_eq!(out.status.code(), Some(expected), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "the socket at {} is not the daemon's: it is listened on by uid 65534, not root; nothing was sent to it",
                socket.display()
            )),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(listener.join().unwrap(), vec![(0, 0); 3], "what the listener received, (bytes, descriptors) a client");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// Metrics never stop supervision: a port another process holds when the
/// daemon starts (at boot, or in an upgrade's moment between two images)
/// is logged, the workloads run, and the port is taken once it is free.
#[test]
fn a_metrics_port_held_by_another_process_is_waited_for_not_fatal() {
    let d = Daemon::setup();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    d.configure("policy_dir", &format!("metrics_listen = \"{port}\"\npolicy_dir"));
    let d = d.start(&[]);
    d.write("up.toml", SLEEPER);
    d.running_pid("up");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("cannot serve metrics at metrics_listen; trying again"), "{log}");
    drop(squatter);
    // Not `get`, which fails the test on a refused connection: until the
    // daemon listens, a connection to the freed port may even be made to
    // itself (an ephemeral source port that is this port), and the next
    // one refused.
    let served = || -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        // Connected to itself, it would read its own request, for good.
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.1 200"))
    };
    d.wait_for("metrics served", |_| served().unwrap_or(false));
}

#[test]
fn metrics_parse_as_prometheus_text_and_match_status() {
    let d = Daemon::setup();
    let port = free_port();
    d.configure("policy_dir", &format!("metrics_listen = \"{port}\"\npolicy_dir"));
    let d = d.start(&[]);
    d.write("up.toml", SLEEPER);
    d.write(
        "down.toml",
        "command = [\"/bin/sh\", \"-c\", \"exit 4\"]\n[restart]\nmax_retries = 1\nbackoff = \"10ms\"\n",
    );
    d.write("broken.toml", "command = 1\n");
    d.running_pid("up");
    d.wait_for("down failed", |d| d.workload("down").is_some_and(|w| w["state"] == "failed"));

    let (head, body) = get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("text/plain; version=0.0.4"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("{name} {labels:?} in\n{body}"));
        match sample.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a plain value"),
        }
    };
    for w in d.status() {
        let name = w["name"].as_str().unwrap();
        assert_eq!(
            value("paddock_workload_state", &[("workload", name), ("state", w["state"].as_str().unwrap())]),
            1.0
        );
        assert_eq!(value("paddock_workload_restarts", &[("workload", name)]), w["restarts"].as_f64().unwrap());
    }
    assert_eq!(value("paddock_workload_last_exit_code", &[("workload", "down")]), 4.0);
    assert!(value("paddock_workload_start_latency_seconds", &[("workload", "up")]) > 0.0);
    assert_eq!(value("paddock_manifests", &[("validity", "valid")]), 2.0);
    assert_eq!(value("paddock_manifests", &[("validity", "invalid")]), 1.0);
    assert_eq!(value("paddock_id_slices", &[("kind", "used")]), 2.0);
    assert_eq!(value("paddock_id_slices", &[("kind", "total")]), 256.0, "the default range: 256 slices");
    assert!(body.contains("paddock_reconcile_duration_seconds_count "), "{body}");
    assert!(get(port, "/").0.starts_with("HTTP/1.1 404"));
    // Loopback only for a bare port: the kernel's table of listening sockets says where.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let listening: Vec<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (addr, state) = (fields[1], fields[3]);
            (state == "0A" && addr.ends_with(&format!(":{port:04X}"))).then(|| addr.to_owned())
        })
        .collect();
    assert_eq!(listening, [format!("0100007F:{port:04X}")], "bound to 127.0.0.1 only");
}

/// Runs `paddock status` with its stdout on a terminal COLUMNS wide.
fn status_on_a_terminal(d: &Daemon, columns: u16, no_color: bool) -> String {
    on_a_terminal(d, &["status"], columns, no_color)
}

/// Runs `paddock ARGS --socket ...` with its stdout on a terminal COLUMNS wide.
fn on_a_terminal(d: &Daemon, args: &[&str], columns: u16, no_color: bool) -> String {
    let size = nix::pty::Winsize { ws_row: 24, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paddock"));
    cmd.args(args).arg("--socket").arg(d.path("paddock.sock")).stdout(Stdio::from(pty.slave)).env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let status = cmd.status().unwrap();
    assert!(status.success());
    // The Command held our copy of the slave: with it gone, reading ends in EIO.
    drop(cmd);
    String::from_utf8(common::read_until_hangup(pty.master)).unwrap().replace("\r\n", "\n")
}

/// A workload's output and a manifest's bytes never drive the terminal of
/// whoever reads them: escaped on a terminal, raw with --raw or in a pipe.
#[test]
fn control_characters_from_workloads_and_manifests_are_escaped_on_a_terminal() {
    let d = Daemon::setup().start(&[]);
    let hostile = "printf 'title \\033]0;pwned\\007 clip \\033]52;c;aGk=\\007 erase \\033[2K end\\n'";
    d.write("noisy.toml", &format!("command = [\"/bin/sh\", \"-c\", {hostile:?}]\n[restart]\npolicy = \"never\"\n"));
    d.wait_for("noisy exited", |d| d.workload("noisy").is_some_and(|w| w["state"] == "exited"));
    let shown = on_a_terminal(&d, &["logs", "noisy"], 200, true);
    assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
    assert!(shown.contains("title \\x1b]0;pwned\\x07 clip \\x1b]52;c;aGk=\\x07 erase \\x1b[2K end"), "{shown:?}");
    let raw = on_a_terminal(&d, &["logs", "--raw", "noisy"], 200, true);
    assert!(raw.contains("\x1b]0;pwned\x07"), "--raw: {raw:?}");
    let piped = stdout(&d.paddock(&["logs", "noisy"]));
    assert!(piped.contains("\x1b]52;c;aGk=\x07"), "a pipe gets the bytes: {piped:?}");
    // A manifest with an escape in it: its error, quoted in status, is escaped.
    d.write("evil.toml", "command = [\"/bin/true\"]\nhostname = \"\x1b]0;pwned\x07\"\n");
    d.wait_for("evil refused", |d| d.workload("evil").is_some_and(|w| w["state"] == "invalid"));
    for args in [&["status"][..], &["status", "evil"][..]] {
        let shown = on_a_terminal(&d, args, 200, true);
        assert!(shown.contains("\\x1b]0;pwned"), "{args:?}: {shown:?}");
        assert!(!shown.contains('\x07'), "{args:?}: {shown:?}");
    }
}

#[test]
fn status_on_a_terminal_is_coloured_fits_its_width_and_honours_no_color() {
    let d = Daemon::setup().start(&[]);
    d.write("terminal-width-check.toml", SLEEPER);
    d.running_pid("terminal-width-check");

    let wide = status_on_a_terminal(&d, 200, false);
    assert!(wide.contains("\x1b["), "colour on a terminal: {wide:?}");
    assert!(wide.contains("LAST EXIT"), "{wide}");

    let plain = status_on_a_terminal(&d, 200, true);
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");

    let narrow = status_on_a_terminal(&d, 50, true);
    assert!(narrow.lines().all(|l| l.chars().count() <= 50), "fits 50 columns:\n{narrow}");
    assert!(narrow.starts_with("NAME") && narrow.contains("running"), "{narrow}");
    assert!(!narrow.contains("UPTIME") && narrow.contains("LAST EXIT"), "uptime is dropped first:\n{narrow}");
}

#[test]
fn stop_waits_with_a_timeout_and_no_block_does_not() {
    let d = Daemon::setup().start(&[]);
    // Ignores SIGTERM; killed at its stop timeout, 3 s.
    d.write(
        "stubborn.toml",
        &common::sandbox::busybox_manifest(
            "trap '' TERM; echo up; while :; do sleep 0.2; done",
            "[stop]\ntimeout = \"3s\"\n",
        ),
    );
    d.running_pid("stubborn");
    // Its trap is set (running is said at the shell's exec, before the trap).
    let log = d.path("state/logs/stubborn.log");
    d.wait_for("stubborn's trap set", |_| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("up")));
    let out = d.paddock(&["stop", "--timeout", "1s", "stubborn"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("stubborn is still stopping after 1s"), "{}", stderr(&out));
    d.wait_for("stubborn stopped", |d| d.workload("stubborn").is_some_and(|w| w["state"] == "stopped"));
    let out = d.paddock(&["start", "--no-block", "stubborn"]);
    assert_eq!(stdout(&out), "starting stubborn\n", "only what the daemon said");
    d.running_pid("stubborn");
    let out = d.paddock(&["stop", "stubborn"]);
    assert!(out.status.success() && stdout(&out).ends_with("stubborn stopped\n"), "{}", stderr(&out));
}

#[test]
fn status_watch_gets_a_line_at_each_change_and_none_without_one() {
    let d = Daemon::setup().start(&[]);
    let mut watch = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["status", "--watch", "--json", "--socket"])
        .arg(d.path("paddock.sock"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = common::output_lines(watch.stdout.take().unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "[]", "what is true now, at once");
    d.write("watched.toml", SLEEPER);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).expect("running, pushed");
        if line.contains("\"state\":\"running\"") {
            break;
        }
    }
    // Nothing changes: nothing is sent (the uptime's ticking is no change).
    assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err(), "a line without a change");
    d.paddock(&["stop", "--no-block", "watched"]);
    let next = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(next.contains("\"held\":true"), "{next}");
    watch.kill().unwrap();
    watch.wait().unwrap();
}

/// An empty PADDOCK_SOCKET is unset (the configuration's socket is
/// looked for), not an empty `--socket` the user never wrote.
#[test]
fn an_empty_paddock_socket_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("paddock.sock");
    let config = dir.path().join("paddock.toml");
    std::fs::write(&config, format!("socket = {:?}\n", socket.display().to_string())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["status", "--config"])
        .arg(&config)
        .env("PADDOCK_SOCKET", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("cannot reach the daemon at {}", socket.display())), "{}", stderr(&out));
}

/// A valid manifest's warnings (what `check` says of it) are the daemon's
/// too: logged once when that version is read, and in `paddock reload`'s
/// answer while the file says it; gone once mended. (The daemon dropped
/// them: only `check` and `run` said them.)
#[test]
fn a_valid_manifests_warnings_are_logged_and_in_a_reloads_answer() {
    let d = Daemon::setup().start(&[]);
    let warned = "command = [\"/bin/sleep\", \"1000\"]\n[restart]\npolicy = \"always\"\nmax_retries = 3\n";
    d.write("web.toml", warned);
    d.running_pid("web");
    let said = "`max_retries` does nothing: policy = \"always\" restarts for ever";
    let out = stdout(&d.paddock(&["reload"]));
    let file = d.path("wl/web.toml");
    assert!(out.starts_with(&format!("{}:4:15: warning: {said}\n", file.display())), "{out}");
    assert!(out.ends_with("nothing changed\n"), "{out}");
    let log = || std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert_eq!(log().matches(said).count(), 1, "logged once, as the version was read: {}", log());
    // Mended: no longer said.
    let pid = d.running_pid("web");
    d.write("web.toml", SLEEPER);
    d.wait_for("web restarted", |d| d.workload("web").is_some_and(|w| w["state"] == "running" && w["pid"] != pid));
    assert_eq!(stdout(&d.paddock(&["reload"])), "nothing changed\n");
    assert_eq!(log().matches(said).count(), 1);
}

/// `status` says below its table what no row shows and `STATUS=` counts:
/// a file whose name is no workload's, one that is no manifest, and the
/// workloads directory refused (it showed an ordinary table: helper-103).
#[test]
fn status_says_what_no_row_shows() {
    let d = Daemon::setup();
    d.write("My_App.toml", "command = [\"/bin/true\"]\n");
    d.write("web.yaml", "x\n");
    d.write("fine.toml", SLEEPER);
    let d = d.start(&[]);
    d.running_pid("fine");
    let status = |d: &Daemon| String::from_utf8(d.paddock(&["status"]).stdout).unwrap();
    let said = status(&d);
    assert!(said.contains("My_App.toml:1:1: error: the file name gives the workload name"), "{said}");
    assert!(said.contains("web.yaml: not read: only NAME.toml files are manifests"), "{said}");
    assert!(!said.contains("refused"), "{said}");
    std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o777)).unwrap();
    d.wait_for("the directory refused", |d| status(d).contains("is refused"));
    let said = status(&d);
    assert!(said.contains("chmod go-w") && said.contains("no change is applied until it is fixed"), "{said}");
    std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.wait_for("the directory taken again", |d| !status(d).contains("is refused"));
    // JSON is the rows alone, as before.
    let json: serde_json::Value = serde_json::from_slice(&d.paddock(&["status", "--json"]).stdout).unwrap();
    assert!(json.is_array(), "{json}");
}
