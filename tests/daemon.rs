//! A real `paddock daemon` in temp directories, driven through its files,
//! its signals and its socket. (Root and user namespaces required.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, SLEEPER, alive, gone, processes};
use serde_json::Value;

#[test]
fn manifests_start_in_their_own_slices_and_a_removed_one_stops() {
    let d = Daemon::setup().start(&[]);
    d.write("web.toml", SLEEPER);
    d.write("db.toml", SLEEPER);
    let (web, db) = (d.running_pid("web"), d.running_pid("db"));
    let s = d.status();
    assert_ne!(s[0]["uid_map"]["host_start"], s[1]["uid_map"]["host_start"], "{s:?}");
    assert_eq!(s[0]["uid_map"]["size"], 65536);
    std::fs::remove_file(d.path("wl/web.toml")).unwrap();
    d.wait_for("web gone", |d| d.workload("web").is_none());
    d.wait_for("web's processes gone", |_| !alive(web));
    assert!(alive(db), "db was not touched");
    assert_eq!(d.running_pid("db"), db);
}

#[test]
fn a_workload_in_the_hosts_user_namespace_shows_no_id_map() {
    let d = Daemon::setup();
    d.configure("policy_dir", "policies = [\"privileged\"]\npolicy_dir");
    let d = d.start(&[]);
    d.write("host.toml", &format!("{SLEEPER}[namespaces]\nuser = \"host\"\n"));
    d.write("remapped.toml", SLEEPER);
    let host = d.running_pid("host");
    d.running_pid("remapped");
    let map = std::fs::read_to_string(format!("/proc/{host}/uid_map")).unwrap();
    assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"], "the host's own map");
    let (h, r) = (d.workload("host").unwrap(), d.workload("remapped").unwrap());
    assert_eq!((&h["uid_map"], &h["gid_map"]), (&Value::Null, &Value::Null), "{h}");
    assert_eq!(r["uid_map"]["size"], 65536, "{r}");
}

#[test]
fn a_killed_workload_restarts_and_a_crash_loop_ends_in_failed() {
    let d = Daemon::setup().start(&[]);
    d.write("svc.toml", &format!("{SLEEPER}[restart]\nbackoff = \"50ms\"\n"));
    let first = d.running_pid("svc");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    d.wait_for("a new sandbox", |d| {
        d.workload("svc").is_some_and(|w| w["state"] == "running" && w["pid"].as_i64() != Some(first))
    });
    let w = d.workload("svc").unwrap();
    assert_eq!((w["restarts"].as_u64(), w["last_exit"].as_str()), (Some(1), Some("SIGKILL")), "{w}");

    d.write(
        "crash.toml",
        "command = [\"/bin/sh\", \"-c\", \"exit 3\"]\n[restart]\nmax_retries = 2\nbackoff = \"10ms\"\n",
    );
    d.wait_for("crash failed", |d| d.workload("crash").is_some_and(|w| w["state"] == "failed"));
    let w = d.workload("crash").unwrap();
    assert_eq!((w["restarts"].as_u64(), w["last_exit"].as_i64(), w["pid"].is_null()), (Some(2), Some(3), true), "{w}");
}

/// A run's mount namespace, held from its end until the next start is
/// under way (its teardown off the restart's path), is let go: restarts
/// leave at most the last one held, and a removed workload none.
#[test]
fn a_restarting_workload_leaves_no_mount_namespace_held() {
    let mut d = Daemon::setup().start(&[]);
    let daemon = d.child.as_ref().unwrap().id();
    let held = || {
        std::fs::read_dir(format!("/proc/{daemon}/fd"))
            .unwrap()
            .flatten()
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.to_string_lossy().starts_with("mnt:")))
            .count()
    };
    d.write("loop.toml", "command = [\"/bin/sh\", \"-c\", \"exit 1\"]\n[restart]\nbackoff = \"0s\"\n");
    let most = std::cell::Cell::new(0);
    d.wait_for("ten restarts", |d| {
        most.set(most.get().max(held()));
        d.workload("loop").is_some_and(|w| w["restarts"].as_u64() >= Some(10))
    });
    assert!(most.get() <= 1, "{} mount namespaces held at once", most.get());
    std::fs::remove_file(d.path("wl/loop.toml")).unwrap();
    d.wait_for("loop gone", |d| d.workload("loop").is_none());
    d.wait_for("no mount namespace held", |_| held() == 0);
    assert_eq!(d.terminate(), 0);
}

#[test]
fn the_configurations_restart_defaults_fill_what_a_manifest_leaves_out() {
    let d = Daemon::setup();
    // A table of its own, after [remap] (the last one).
    let mut text = std::fs::read_to_string(d.path("paddock.toml")).unwrap();
    text.push_str("[restart]\nmax_retries = 1\nbackoff = \"10ms\"\n");
    std::fs::write(d.path("paddock.toml"), text).unwrap();
    let d = d.start(&[]);
    // No [restart] in the manifest: the daemon's max_retries (1) ends the loop.
    d.write("brief.toml", "command = [\"/bin/sh\", \"-c\", \"exit 5\"]\n");
    // Its own max_retries beats the daemon's.
    d.write("stubborn.toml", "command = [\"/bin/sh\", \"-c\", \"exit 6\"]\n[restart]\nmax_retries = 3\n");
    for (name, restarts) in [("brief", 1), ("stubborn", 3)] {
        d.wait_for(&format!("{name} failed"), |d| d.workload(name).is_some_and(|w| w["state"] == "failed"));
        assert_eq!(d.workload(name).unwrap()["restarts"].as_u64(), Some(restarts), "{name}");
    }
}

#[test]
fn an_invalid_edit_keeps_the_old_version_running_and_the_fix_applies() {
    let d = Daemon::setup().start(&[]);
    d.write("app.toml", SLEEPER);
    let pid = d.running_pid("app");
    d.write("app.toml", "command = [\"/bin/sleep\", \"1000\"]\n[namespaces]\nnetwork = \"host\"\n");
    d.wait_for("the error shown", |d| d.workload("app").is_some_and(|w| w["error"].is_string()));
    let w = d.workload("app").unwrap();
    assert!(w["error"].as_str().unwrap().contains("app.toml:3:11: error: policy baseline refuses this"), "{w}");
    assert_eq!(
        (w["state"].as_str(), w["pid"].as_i64()),
        (Some("running"), Some(pid)),
        "the last valid version keeps running"
    );
    d.write("app.toml", "command = [\"/bin/sleep\", \"999\"]\n");
    d.wait_for("the fix applied", |d| {
        d.workload("app")
            .is_some_and(|w| w["error"].is_null() && w["state"] == "running" && w["pid"].as_i64() != Some(pid))
    });
    assert!(!alive(pid), "the old version was stopped");
    // A new file that is invalid starts nothing and shows its error.
    d.write("bad.toml", "command = []\n");
    d.wait_for("bad shown", |d| d.workload("bad").is_some_and(|w| w["error"].is_string() && w["pid"].is_null()));
}

/// An edit whose mount the start would refuse (`check` warns of it: "on
/// this host the workload would not start") is a bad edit: the running
/// version stays, not stopped for a start that fails at once.
#[test]
fn an_edit_whose_mount_source_the_start_refuses_keeps_the_old_version_running() {
    let d = Daemon::setup().start(&[]);
    // Data in a directory others may not enter: a mount would hand it out.
    std::fs::create_dir_all(d.path("secret/data")).unwrap();
    std::fs::set_permissions(d.path("secret"), std::fs::Permissions::from_mode(0o700)).unwrap();
    d.write("app.toml", SLEEPER);
    let pid = d.running_pid("app");
    let hidden = d.path("secret/data").display().to_string();
    for (source, said) in [(hidden.as_str(), "a directory others may not enter"), ("/sys/kernel", "sysfs")] {
        d.write(
            "app.toml",
            &format!("command = [\"/bin/sleep\", \"1000\"]\n[[mounts]]\nsource = {source:?}\ntarget = \"/mnt\"\n"),
        );
        d.wait_for("the error shown", |d| {
            d.workload("app").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains(said)))
        });
        let w = d.workload("app").unwrap();
        assert!(
            w["error"].as_str().unwrap().contains("app.toml:3:10: error: on this host the workload would not start"),
            "{w}"
        );
        assert_eq!(
            (w["state"].as_str(), w["pid"].as_i64()),
            (Some("running"), Some(pid)),
            "the last valid version keeps running"
        );
    }
}

/// An edit that brings a limit whose cgroup controller the daemon's
/// cgroups lack is a bad edit: its start would fail at once, so the
/// running version runs on. The daemon's cgroups are made inside a cgroup
/// whose parent enables no controller for it, on any host's cgroup2
/// mount (one whose root has every controller too).
#[test]
fn an_edit_with_a_limit_the_host_has_no_controller_for_keeps_the_old_version_running() {
    let outer = cgroup2_mount().join(format!("paddock-test-bare-{}", std::process::id()));
    let bare = outer.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let controllers = std::fs::read_to_string(bare.join("cgroup.controllers")).unwrap();
    assert_eq!(controllers.trim(), "", "{} was given controllers", bare.display());
    let d = Daemon::setup();
    d.configure("policy_dir", &format!("cgroup_root = {:?}\npolicy_dir", bare.display().to_string()));
    let mut d = d.start(&[]);
    d.write("app.toml", SLEEPER);
    let pid = d.running_pid("app");
    d.write("app.toml", &format!("{SLEEPER}[resources]\ncpu = 0.5\n"));
    let said = "cpu limit needs the cpu cgroup controller";
    d.wait_for("the limit refused at its line", |d| {
        d.workload("app").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains(said)))
    });
    let w = d.workload("app").unwrap();
    assert!(w["error"].as_str().unwrap().contains(&format!("app.toml:3:7: error: {said}")), "{w}");
    assert_eq!((w["state"].as_str(), w["pid"].as_i64()), (Some("running"), Some(pid)), "{w}");
    let group = paddock::sandbox::cgroup::workloads_group(&d.path("state"));
    assert_eq!(d.terminate(), 0);
    for dir in [bare.join(&group).join("app"), bare.join(&group), bare, outer] {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn an_untouched_workload_keeps_its_pid_through_edits_of_others() {
    let d = Daemon::setup().start(&[]);
    d.write("steady.toml", SLEEPER);
    d.write("busy.toml", SLEEPER);
    let steady = d.running_pid("steady");
    for i in 0..100 {
        d.write("busy.toml", &format!("command = [\"/bin/sleep\", \"{}\"]\n", 1000 + i));
        std::thread::sleep(Duration::from_millis(5));
    }
    d.wait_for("busy settled", |d| d.workload("busy").is_some_and(|w| w["state"] == "running"));
    assert_eq!(d.running_pid("steady"), steady);
    assert_eq!(d.workload("steady").unwrap()["restarts"], 0);
}

/// A save that renames the old file away before it writes the new one
/// (vim's, keeping a backup) leaves the manifest missing for a moment:
/// its workload is neither stopped nor released from its hold for that,
/// even while other saves follow.
#[test]
fn a_save_that_renames_the_file_away_first_disturbs_nothing() {
    let d = Daemon::setup().start(&[]);
    d.write("kept.toml", SLEEPER);
    d.write("held.toml", SLEEPER);
    let kept = d.running_pid("kept");
    d.running_pid("held");
    assert!(d.paddock(&["stop", "held"]).status.success());
    for name in ["kept", "held"] {
        let path = d.path(&format!("wl/{name}.toml"));
        std::fs::rename(&path, d.path(&format!("wl/{name}.toml~"))).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&path, SLEEPER).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.running_pid("kept"), kept);
    assert_eq!(d.workload("kept").unwrap()["restarts"], 0);
    let held = d.workload("held").unwrap();
    assert_eq!((&held["state"], &held["held"]), (&Value::from("stopped"), &Value::from(true)), "{held}");
    // Gone for good: removed once it stays gone.
    std::fs::remove_file(d.path("wl/kept.toml")).unwrap();
    d.wait_for("kept removed", |d| d.workload("kept").is_none());
    assert!(gone(kept));
}

/// A manifest written in parts (its writer keeps it open between them)
/// is read once its writer closes it, never half-written: here the first
/// part alone is a valid manifest of its own, and an edit's first part
/// alone is invalid. One kept open past the patience is read as it is then.
#[test]
fn a_file_written_in_parts_is_applied_whole() {
    use std::io::Write;
    let d = Daemon::setup().start(&[]);
    let path = d.path("wl/parts.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"command = [\"/bin/sleep\", \"1000\"]\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.workload("parts").is_none(), "a half-written new file was applied");
    file.write_all(b"hostname = \"whole\"\n").unwrap();
    drop(file);
    let pid = d.running_pid("parts");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert_eq!(log.matches("starting workload=parts").count(), 1, "{log}");

    // An edit in place: its first part (a truncated file) is not seen.
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"command = [\"/bin/sleep\", ").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let w = d.workload("parts").unwrap();
    assert_eq!((&w["pid"], &w["error"]), (&Value::from(pid), &Value::Null), "{w}");
    file.write_all(b"\"1000\"]\nhostname = \"edited\"\n").unwrap();
    drop(file);
    // Applied whole, once: one restart, for the hostname.
    d.wait_for("the edit applied", |d| d.workload("parts").is_some_and(|w| w["pid"] != pid && w["state"] == "running"));
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let starts: Vec<&str> = log.lines().filter(|l| l.contains("starting workload=parts")).collect();
    assert_eq!(starts.len(), 2, "{log}");
    assert!(starts[1].contains("manifest changed: hostname"), "{}", starts[1]);

    // A writer that keeps it open: read after WRITE_PATIENCE (2 s).
    let mut slow = std::fs::File::create(d.path("wl/slow.toml")).unwrap();
    slow.write_all(SLEEPER.as_bytes()).unwrap();
    let begun = Instant::now();
    d.running_pid("slow");
    assert!(begun.elapsed() >= Duration::from_millis(1500), "read at once: {:?}", begun.elapsed());
    drop(slow);
}

/// A write that begins while a scan is under way (here a scan that waits
/// 100 ms for a file renamed away, as an editor's save does) is not read
/// half-written by that scan: what was written is looked at once the
/// scan has read every file.
#[test]
fn a_write_begun_during_a_scan_is_not_read_half_written() {
    use std::io::Write;
    let d = Daemon::setup().start(&[]);
    d.write("x.toml", SLEEPER);
    let x = d.running_pid("x");
    std::fs::rename(d.path("wl/x.toml"), d.path("wl/x.toml~")).unwrap();
    // The scan began 20 ms after the rename, and looks again 100 ms later.
    std::thread::sleep(Duration::from_millis(60));
    let mut b = std::fs::File::create(d.path("wl/b.toml")).unwrap();
    b.write_all(b"command = [\"/bin/sleep\", \"1000\"]\n").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    std::fs::rename(d.path("wl/x.toml~"), d.path("wl/x.toml")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.workload("b").is_none(), "a half-written file was applied");
    assert_eq!(d.running_pid("x"), x);
    // Taken away before its writer is done: never applied.
    std::fs::remove_file(d.path("wl/b.toml")).unwrap();
    drop(b);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.workload("b").is_none());
}

#[test]
fn sigterm_stops_every_workload_and_exits_0() {
    let mut d = Daemon::setup().start(&[]);
    d.write("a.toml", SLEEPER);
    d.write("b.toml", "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; sleep 1000\"]\n[stop]\ntimeout = \"200ms\"\n");
    let (a, b) = (d.running_pid("a"), d.running_pid("b"));
    assert_eq!(d.terminate(), 0);
    assert!(!alive(a) && !alive(b), "every sandbox is gone (b ignored SIGTERM and was killed)");
    assert!(!d.path("paddock.sock").exists());
}

/// A workload whose stop.timeout is longer than the daemon's own stop may
/// take (`shutdown_timeout`) is killed when that time is up, so the daemon
/// exits before its unit's `TimeoutStopSec=` would have systemd kill it
/// and leave the sandbox running.
#[test]
fn a_shutdown_kills_what_outlasts_shutdown_timeout() {
    let d = Daemon::setup();
    d.configure("policy_dir", "shutdown_timeout = \"1s\"\npolicy_dir");
    let mut d = d.start(&[]);
    d.write(
        "stubborn.toml",
        "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; sleep 1000\"]\n[stop]\ntimeout = \"1000h\"\n",
    );
    let init = d.running_pid("stubborn");
    let mut child = d.child.take().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // Not left behind (a daemon that holds this test's output would hang it).
            let _ = child.kill();
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(init as i32, libc::SIGKILL) };
            panic!("the daemon still waited for a stop.timeout of 1000h after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(gone(init), "the sandbox outlived the daemon");
}

#[test]
fn a_world_writable_workloads_directory_is_refused() {
    let d = Daemon::setup();
    std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = d.run_refused(&[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("is writable by group and others (mode 0777)") && err.contains("chmod go-w"), "{err}");
}

#[test]
fn state_run_and_socket_directories_others_could_change_are_refused() {
    // Whoever could change these could swap a log for a link to
    // /etc/ld.so.preload, or a record for one naming any process.
    let d = Daemon::setup();
    // The setting `key` moved from the file `from` to `to`, and the daemon run.
    let moved = |key: &str, from: &str, to: &str| {
        let quoted = |file: &str| format!("{key} = {:?}", d.path(file).display().to_string());
        d.configure(&quoted(from), &quoted(to));
        d.run_refused(&[])
    };
    // A state directory a user owns.
    std::fs::create_dir(d.path("state")).unwrap();
    std::os::unix::fs::chown(d.path("state"), Some(1000), None).unwrap();
    let (code, err) = d.run_refused(&[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("is owned by uid 1000, not root") && err.contains("a log appended to"), "{err}");
    std::os::unix::fs::chown(d.path("state"), Some(0), None).unwrap();
    // A run directory under a directory its group may write.
    std::fs::create_dir(d.path("shared")).unwrap();
    std::fs::set_permissions(d.path("shared"), std::fs::Permissions::from_mode(0o775)).unwrap();
    let (code, err) = moved("run_dir", "run", "shared/run");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("shared is writable by its group (mode 0775)") && err.contains("chmod go-w"), "{err}");
    assert!(err.contains("run_dir "), "the setting is named: {err}");
    std::fs::set_permissions(d.path("shared"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The socket in a directory everyone shares (as /tmp): the advice is
    // another directory, never to chmod a shared one.
    std::fs::create_dir(d.path("tmp")).unwrap();
    std::fs::set_permissions(d.path("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (code, err) = moved("socket", "paddock.sock", "tmp/paddock.sock");
    assert_eq!(code, Some(78), "{err}");
    let err = err.lines().find(|l| l.starts_with("paddock daemon:")).unwrap_or_default();
    assert!(
        err.contains("the control socket's directory ")
            && err.contains("is a directory others share (mode 1777, as /tmp is)")
            && err.contains("name a directory of root's instead")
            && !err.contains("chmod"),
        "{err}"
    );
    assert!(!d.path("paddock.sock").exists() && !d.path("tmp/paddock.sock").exists(), "nothing was started");
}

#[test]
fn the_state_directory_and_volumes_root_are_made_roots_alone_and_an_open_volumes_root_is_refused() {
    let mut d = Daemon::setup().start(&[]);
    for dir in ["state", "volumes"] {
        let mode = std::fs::metadata(d.path(dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{dir} was created with mode {mode:o}");
    }
    assert_eq!(d.terminate(), 0);
    std::fs::create_dir_all(d.path("volumes")).unwrap();
    std::fs::set_permissions(d.path("volumes"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = d.run_refused(&[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("can be entered by others (mode 0755)") && err.contains("chmod o-rwx"), "{err}");
}

/// `paddock daemon --validate` says what a start would refuse, with the
/// same exit status, and changes nothing: no directory made, no remap
/// user added, no socket.
#[test]
fn validate_refuses_what_a_start_would_and_changes_nothing() {
    let d = Daemon::setup();
    let validate = || {
        let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["daemon", "--validate", "--config"])
            .arg(d.path("paddock.toml"))
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), said)
    };
    let (code, said) = validate();
    assert_eq!(code, Some(0), "{said}");
    let config = d.path("paddock.toml").display().to_string();
    assert!(said.contains(&format!("the daemon would start with this configuration: {config}")), "{said}");
    for made in ["state", "run", "volumes", "paddock.sock"] {
        assert!(!d.path(made).exists(), "--validate made {made}");
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert_eq!(std::fs::read_to_string(d.path("passwd")).unwrap(), passwd, "--validate added the remap user");
    assert_eq!(std::fs::read_to_string(d.path("subuid")).unwrap(), "", "--validate added a range");
    // A relative --state-dir or --workloads, as a relative path in the file.
    for flag in ["--state-dir", "--workloads"] {
        let (code, said) = d.run_refused(&[flag, "state"]);
        assert_eq!(code, Some(78), "{said}");
        assert!(said.contains(&format!("{flag} state: give an absolute path")), "{said}");
    }
    // What a start refuses, with its status: an unsafe directory, an
    // invalid file (named at its line).
    std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, said) = validate();
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("is writable by group and others (mode 0777)"), "{said}");
    std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.configure("[remap]\n", "resync_interval = \"0s\"\n[remap]\n");
    let (code, said) = validate();
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains(&format!("{config}:7:")) && said.contains("resync_interval"), "{said}");
    assert_eq!(d.run_refused(&[]).0, Some(78), "a start refuses it too");
    d.configure("resync_interval = \"0s\"\n", "cgroup_root = \"/nonexistent\"\n");
    let (code, said) = validate();
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("cgroup_root /nonexistent is not a directory"), "{said}");
    d.configure("cgroup_root = \"/nonexistent\"\n", "");
    // A state directory that is a file: the configuration's fault (78),
    // said as such, not "cannot create ...: File exists" (exit 1).
    std::fs::write(d.path("state"), "").unwrap();
    let (code, said) = validate();
    assert_eq!(code, Some(78), "{said}");
    let state = d.path("state").display().to_string();
    assert!(said.contains(&format!("the state directory {state} is not a directory")), "{said}");
    assert_eq!(d.run_refused(&[]).0, Some(78), "a start refuses it too");
    std::fs::remove_file(d.path("state")).unwrap();
    // A network definition refused is said, and no reason to refuse a start.
    std::fs::create_dir(d.path("networks")).unwrap();
    std::fs::write(d.path("networks/lan.conflist"), "not json").unwrap();
    let (code, said) = validate();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("but 1 network definition(s) are refused"), "{said}");
}

/// An account file that cannot be read, or is not one, is said with the
/// configuration's key and line that named it, and what to do.
#[test]
fn an_account_files_error_names_the_key_and_line_that_named_it() {
    let d = Daemon::setup();
    let config = d.path("paddock.toml").display().to_string();
    // (The remap user exists: --validate reads no range of one a start would add.)
    let mut passwd = std::fs::read_to_string(d.path("passwd")).unwrap();
    passwd.push_str("paddock:*:64998:64998::/:/bin/false\n");
    std::fs::write(d.path("passwd"), passwd).unwrap();
    std::fs::write(d.path("subuid"), "paddock:x:1:2\n").unwrap();
    let (code, said) = d.run_refused(&["--validate"]);
    assert_eq!(code, Some(78), "{said}");
    let subuid = d.path("subuid").display().to_string();
    assert!(
        said.contains(&format!(
            "{subuid}:1: expected `name:start:count`, found \"paddock:x:1:2\" (named by `[remap] subuid` at {config}:8:10); mend the line, or name another file there"
        )),
        "{said}"
    );
    std::fs::write(d.path("subuid"), "").unwrap();
    let passwd = d.path("passwd").display().to_string();
    let wl = d.path("wl").display().to_string();
    d.configure(&format!("passwd = {passwd:?}"), &format!("passwd = {wl:?}"));
    let (code, said) = d.run_refused(&["--validate"]);
    assert_eq!(code, Some(78), "{said}");
    assert!(
        said.contains(&format!(
            "{wl} is not a regular file (named by `[remap] passwd` at {config}:10:10): name an account file itself there, such as /etc/passwd"
        )),
        "{said}"
    );
}

/// A range of the remap user smaller than a slice is refused at its line,
/// by --validate and a start alike, and nothing is written: a workload
/// given it would have fewer ids than its manifest was checked against.
#[test]
fn a_range_smaller_than_a_slice_is_refused_at_its_line() {
    let d = Daemon::setup();
    let mut passwd = std::fs::read_to_string(d.path("passwd")).unwrap();
    passwd.push_str("paddock:*:64998:64998::/:/bin/false\n");
    std::fs::write(d.path("passwd"), passwd).unwrap();
    std::fs::write(d.path("subuid"), "paddock:200000:65536\n").unwrap();
    std::fs::write(d.path("subgid"), "paddock:200000:65536\npaddock:300000:1000\n").unwrap();
    let subgid = d.path("subgid").display().to_string();
    for args in [&["--validate"][..], &[]] {
        let (code, said) = d.run_refused(args);
        assert_eq!(code, Some(78), "{said}");
        assert!(
            said.contains(&format!("{subgid}:2: paddock's range 300000:1000 holds 1000 ids, fewer than a workload's slice (slice_size = 65536)"))
                && said.contains("give the range at least 65536 ids, remove it if paddock has others, or set slice_size to 1000 or less"),
            "{said}"
        );
    }
    assert_eq!(std::fs::read_to_string(d.path("subgid")).unwrap(), "paddock:200000:65536\npaddock:300000:1000\n");
    // A smaller slice_size fits it.
    d.configure("[remap]\n", "[remap]\nslice_size = 1000\n");
    let (code, said) = d.run_refused(&["--validate"]);
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn sd_notify_messages_arrive_in_order() {
    let (_notify, sock_path, sock) = common::daemon::notify_socket(Duration::from_secs(10));
    let d = Daemon::setup();
    d.write("one.toml", SLEEPER);
    let mut d = d.start(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut first = next();
    while first.starts_with("STATUS=") {
        first = next();
    }
    assert_eq!(first, "READY=1\nSTATUS=1 running, 0 failed, 0 invalid");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(d.child.as_ref().unwrap().id() as i32, libc::SIGHUP) };
    let mut seen = Vec::new();
    while !seen.contains(&"READY=1\nSTATUS=1 running, 0 failed, 0 invalid".to_owned()) {
        seen.push(next());
    }
    // STATUS= updates may come at any time; around a SIGHUP the order is RELOADING=1, then READY=1.
    let lifecycle: Vec<&str> = seen.iter().map(String::as_str).filter(|m| !m.starts_with("STATUS=")).collect();
    assert_eq!(lifecycle, ["RELOADING=1", "READY=1\nSTATUS=1 running, 0 failed, 0 invalid"], "{seen:?}");
    assert_eq!(d.terminate(), 0);
    let mut last = next();
    while last.starts_with("STATUS=") {
        last = next();
    }
    // With how long systemd is to wait for the stop: shutdown_timeout (80 s) and 10 s.
    assert_eq!(last, "STOPPING=1\nEXTEND_TIMEOUT_USEC=90000000");
}

#[test]
fn status_says_when_the_daemon_is_not_running() {
    let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["status", "--socket", "/nonexistent/paddock.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the daemon at /nonexistent/paddock.sock"));
}

#[test]
fn a_daemon_killed_with_sigkill_leaves_its_workloads_running_and_the_next_adopts_them() {
    let mut d = Daemon::setup().start(&[]);
    d.write("kept.toml", SLEEPER);
    let pid = d.running_pid("kept");
    d.kill();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!gone(pid), "the sandbox runs on without its daemon");
    let mut d = d.start(&[]);
    assert_eq!(d.running_pid("kept"), pid, "adopted, not restarted");
    let w = d.workload("kept").unwrap();
    assert_eq!(w["restarts"], 0, "{w}");
    // Supervised again: a stop reaches it, and its end is heard.
    assert!(d.paddock(&["stop", "kept"]).status.success());
    d.wait_for("kept stopped", |d| d.workload("kept").is_some_and(|w| w["state"] == "stopped"));
    assert!(gone(pid));
    assert_eq!(d.terminate(), 0);
}

#[test]
fn the_daemon_raises_its_open_files_limit_but_workloads_keep_the_usual_one() {
    let mut ours = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) }, 0);
    assert!(ours.rlim_max > 256, "the hard open-files limit is too low for this test: {}", ours.rlim_max);
    let mut d = Daemon::setup();
    d.nofile_soft = Some(256);
    let d = d.start(&[]);
    let daemon = d.child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{daemon}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, ours.rlim_max, "the daemon's soft limit is its hard one: {line}");
    d.write("limits.toml", "command = [\"/bin/sh\", \"-c\", \"ulimit -Sn; sleep 1000\"]\n");
    d.running_pid("limits");
    let log = d.path("state/logs/limits.log");
    d.wait_for("the limit printed", |_| std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with('\n')));
    let out = d.paddock(&["logs", "limits"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "256\n", "the workload has the limit the daemon started with");
}

#[test]
fn a_workloads_output_is_kept_in_its_log_across_restarts() {
    let d = Daemon::setup().start(&[]);
    d.write(
        "talker.toml",
        "command = [\"/bin/sh\", \"-c\", \"echo out; echo err >&2; sleep 0.2; exit 1\"]\n[restart]\nbackoff = \"10ms\"\nmax_retries = 1\n",
    );
    d.wait_for("talker failed", |d| d.workload("talker").is_some_and(|w| w["state"] == "failed"));
    let log = d.path("state/logs/talker.log");
    d.wait_for("both runs logged", |_| std::fs::read_to_string(&log).is_ok_and(|t| t.matches("err\n").count() == 2));
    let text = std::fs::read_to_string(&log).unwrap();
    // Each line is stamped with the time it arrived (what `paddock logs -t` shows).
    let lines: Vec<(&str, &str)> = text.lines().map(|l| l.split_once(' ').unwrap()).collect();
    assert_eq!(lines.iter().map(|(_, l)| *l).collect::<Vec<_>>(), ["out", "err", "out", "err"], "{text}");
    for (stamp, _) in lines {
        assert!(paddock::timefmt::parse_rfc3339(stamp).is_some(), "{stamp} is a time");
    }
}

#[test]
fn a_configmap_style_symlink_swap_converges() {
    let d = Daemon::setup();
    // Its own directory: the daemon watches the link's parent, where nothing else may stir.
    std::fs::create_dir(d.path("cm")).unwrap();
    for v in ["cm", "cm/v1", "cm/v2"] {
        std::fs::create_dir_all(d.path(v)).unwrap();
        std::fs::set_permissions(d.path(v), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(d.path("cm/v1/old.toml"), SLEEPER).unwrap();
    std::fs::write(d.path("cm/v2/new.toml"), SLEEPER).unwrap();
    std::os::unix::fs::symlink("v1", d.path("cm/current")).unwrap();
    let wl = d.path("wl").display().to_string();
    d.configure(
        &format!("workloads = {wl:?}"),
        &format!("workloads = {:?}", d.path("cm/current").display().to_string()),
    );
    let d = d.start(&[]);
    let old = d.running_pid("old");
    // Kubernetes' swap: a new link renamed over the old one.
    std::os::unix::fs::symlink("v2", d.path("cm/current.new")).unwrap();
    std::fs::rename(d.path("cm/current.new"), d.path("cm/current")).unwrap();
    d.wait_for("new running and old gone", |d| {
        d.workload("new").is_some_and(|w| w["state"] == "running") && d.workload("old").is_none()
    });
    assert!(!alive(old));
    // The watch follows the link to its new target: an edit made in place
    // there is seen at once, not at the next periodic resync (30 s).
    std::fs::write(d.path("cm/v2/third.toml"), SLEEPER).unwrap();
    d.running_pid("third");
}

#[test]
fn a_burst_of_a_thousand_files_converges() {
    let d = Daemon::setup();
    // One shared slice: a thousand workloads need no thousand slices.
    d.configure("[remap]", "[remap]\nisolation = \"shared\"");
    let d = d.start(&[]);
    let staging = d.path("staging");
    std::fs::create_dir(&staging).unwrap();
    for i in 0..1000 {
        std::fs::write(
            staging.join(format!("job-{i:04}.toml")),
            "command = [\"/bin/true\"]\n[restart]\npolicy = \"never\"\n",
        )
        .unwrap();
    }
    for i in 0..1000 {
        let f = format!("job-{i:04}.toml");
        std::fs::rename(staging.join(&f), d.path("wl").join(&f)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut slowest = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let s = d.status();
        slowest = slowest.max(asked.elapsed());

        let done = s.iter().filter(|w| w["state"] == "exited" && w["last_exit"] == 0).count();
        if done == 1000 {
            break;
        }
        assert!(slowest < Duration::from_secs(5), "status waited {slowest:?} behind the burst");
        assert!(Instant::now() < deadline, "{done} of 1000 ran to completion");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_workload_named() {
    let mut d = Daemon::setup().start_with(&["--log-format", "json"], &[]);
    d.write("logged.toml", "command = [\"/bin/sh\", \"-c\", \"exit 4\"]\n[restart]\npolicy = \"never\"\n");
    d.wait_for("logged exited", |d| d.workload("logged").is_some_and(|w| w["state"] == "exited"));
    assert_eq!(d.terminate(), 0);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{log}");
    let exited = lines.iter().find(|l| l["fields"]["message"] == "exited").expect("an exit is logged");
    assert_eq!(exited["fields"]["workload"], "logged", "{exited}");
}

#[test]
fn a_new_daemon_adopts_what_runs_cleans_up_what_does_not_and_keeps_the_slices() {
    let d = Daemon::setup();
    // "privileged": a sandbox in the host's pid namespace, whose processes
    // outlive their init; only the records and the cgroup can find them.
    d.configure("policy_dir", "policies = [\"privileged\"]\npolicy_dir");
    let mut d = d.start(&[]);
    d.write("heir.toml", "command = [\"/bin/sleep\", \"1002\"]\n");
    d.write("stray.toml", "command = [\"/bin/sleep\", \"1003\"]\n[namespaces]\npid = \"host\"\n");
    let heir = d.running_pid("heir");
    let stray_init = d.running_pid("stray");
    let slices: Vec<Value> = ["heir", "stray"].iter().map(|n| d.workload(n).unwrap()["uid_map"].clone()).collect();
    let left = processes(&["/bin/sleep", "1003"]);
    assert_eq!(left.len(), 1, "one stray sleep runs");

    d.kill();
    // While no daemon runs, the stray's init is killed; its workload, in the
    // host's pid namespace, outlives it (the case the cgroup search is for).
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(stray_init as i32, libc::SIGKILL) };
    d.wait_for("the stray's init to die", |_| gone(stray_init));
    assert!(!gone(left[0]), "the stray's workload outlived its init");
    // State damaged as a crash might leave it: the id table and one record unreadable.
    std::fs::write(d.path("state/idmap.json"), "{\"slices\": {\"heir\"").unwrap();
    std::fs::write(d.path("state/sandboxes/ghost.json"), "garbage").unwrap();
    // And writes a killed process left half done (no process has a pid
    // past pid_max's ceiling).
    let abandoned =
        [format!("state/.idmap.json.{}.0.tmp", 1 << 23), format!("state/sandboxes/.heir.json.{}.0.tmp", 1 << 23)];
    for file in &abandoned {
        std::fs::write(d.path(file), "{").unwrap();
    }

    let d = d.start(&[]);
    assert_eq!(d.running_pid("heir"), heir, "heir was adopted, not restarted");
    d.running_pid("stray");
    assert!(gone(left[0]), "the new daemon stopped the stray before starting its own");
    assert_eq!(processes(&["/bin/sleep", "1002"]).len(), 1, "exactly one sandbox of heir");
    assert_eq!(processes(&["/bin/sleep", "1003"]).len(), 1, "exactly one sandbox of stray");
    let now: Vec<Value> = ["heir", "stray"].iter().map(|n| d.workload(n).unwrap()["uid_map"].clone()).collect();
    assert_eq!(now, slices, "the slices survive, rebuilt from the sandbox records");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("adopted a sandbox"), "{log}");
    assert!(log.contains("left by a daemon that died"), "{log}");
    assert!(log.contains("the id table is unreadable"), "{log}");
    assert!(log.contains("corrupt sandbox record"), "{log}");
    assert!(d.path("state/idmap.json.corrupt").exists(), "the bad table is kept for a post-mortem");
    assert!(!d.path("state/sandboxes/ghost.json").exists());
    for file in &abandoned {
        assert!(!d.path(file).exists(), "{file} is removed at the start");
    }
    // Stopped, not killed: a killed daemon would leave the stray behind again.
    let mut d = d;
    assert_eq!(d.terminate(), 0);
    assert!(processes(&["/bin/sleep", "1003"]).is_empty(), "the stray is stopped with its daemon");
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let d = Daemon::setup().start(&[]);
    d.write("held.toml", "command = [\"/bin/sleep\", \"1004\"]\n");
    let pid = d.running_pid("held");
    let other = d.path("other.sock").display().to_string();
    let (code, stderr) = d.run_refused(&["--socket", &other]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("another paddock daemon uses the state directory"), "{stderr}");
    assert_eq!(d.running_pid("held"), pid, "the first daemon's sandbox is untouched");
}

/// A second daemon given a state directory of its own but the first's
/// run directory (`paddock daemon --state-dir /tmp/x`, with the host's
/// configuration) would take the first's network namespaces there for
/// strays of its own and remove them before it found their socket taken:
/// it is refused before it touches anything.
#[test]
fn a_second_daemon_on_the_same_run_directory_is_refused_and_removes_nothing() {
    let d = Daemon::setup().start(&[]);
    d.write("held.toml", "command = [\"/bin/sleep\", \"1005\"]\n");
    let pid = d.running_pid("held");
    // As the first daemon keeps a networked workload's namespace.
    let kept = d.path("run/netns/web");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    paddock::sandbox::netns::create(&kept).unwrap();
    let state = d.path("other-state").display().to_string();
    let other = d.path("other.sock").display().to_string();
    // Run to its end, or stopped (as Ctrl-C would) once it is plain it started.
    let mut second = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["daemon", "--config"])
        .arg(d.path("paddock.toml"))
        .args(["--state-dir", &state, "--socket", &other])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while second.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let out = second.wait_with_output().unwrap();
    let (code, stderr) = (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned());
    let kept_there = paddock::sandbox::netns::exists(&kept);
    paddock::sandbox::netns::remove(&kept);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("another paddock daemon uses the run directory"), "{stderr}");
    assert!(kept_there, "the first daemon's network namespace is left where it is: {stderr}");
    assert_eq!(d.running_pid("held"), pid, "the first daemon's sandbox is untouched");
}

/// The daemon's arguments are its unit's: a flag it does not know (a typo
/// in a drop-in) is a configuration error a restart cannot fix (78, which
/// the unit does not restart on), not clap's usage status 2.
#[test]
fn a_flag_the_daemon_does_not_know_is_a_configuration_error() {
    let d = Daemon::setup();
    let (code, stderr) = d.run_refused(&["--log-format", "xml"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("invalid value 'xml'"), "{stderr}");
    let (code, _) = d.run_refused(&["--bogus"]);
    assert_eq!(code, Some(78));
    let help = Command::new(env!("CARGO_BIN_EXE_paddock")).args(["daemon", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0), "--help is no error");
}

/// A `socket` that names a file other than a socket (a typo naming the
/// configuration, say) is refused, and the file left as it was: only a
/// socket no one listens on is replaced.
#[test]
fn a_socket_path_naming_something_else_is_refused_and_left_alone() {
    let d = Daemon::setup();
    // The daemon with `--socket path`, given 10 s to refuse it.
    let refused = |path: &std::path::Path| {
        let mut daemon = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["daemon", "--config"])
            .arg(d.path("paddock.toml"))
            .arg("--socket")
            .arg(path)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = daemon.kill();
                let _ = daemon.wait();
                panic!("the daemon listened at {}", path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = daemon.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let file = d.path("out/notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let (code, stderr) = refused(&file);
    assert_eq!(code, Some(78), "a restart cannot mend it: {stderr}");
    assert!(stderr.contains("something other than a socket is there") && stderr.contains("remove it"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let link = d.path("out/link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let (code, stderr) = refused(&link);
    assert_eq!(code, Some(78), "{stderr}");
    let (code, stderr) = d.run_refused(&["--validate", "--socket", &file.display().to_string()]);
    assert_eq!(code, Some(78), "--validate says so too: {stderr}");
    assert!(std::fs::symlink_metadata(&link).is_ok() && file.exists(), "the link and its file are left");
}

#[test]
fn an_inotify_overflow_converges() {
    let d = Daemon::setup().start(&[]);
    let pid = d.child.as_ref().unwrap().id() as i32;
    let queue: usize =
        std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events").unwrap().trim().parse().unwrap();
    // A stopped daemon reads no events: more files than the kernel queues
    // (ignored names, so only the overflow matters), then the one that counts.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for i in 0..queue + 100 {
        std::fs::write(d.path(&format!("wl/.filler-{i}")), "").unwrap();
    }
    std::fs::write(d.path("wl/late.toml"), "command = [\"/bin/sleep\", \"1005\"]\n").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // The file's own events were lost with the overflow; the rescan it
    // causes finds the file (after the queued events, so wait for it).
    d.wait_for("the overflow to be reported", |d| {
        std::fs::read_to_string(d.path("out/daemon.log")).unwrap().contains("the inotify queue overflowed")
    });
    d.running_pid("late");
    assert_eq!(d.status().len(), 1, "ignored names stay ignored");
}

/// The host's cgroup2 mount: /sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
fn cgroup2_mount() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let found = mounts.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.get(2) == Some(&"cgroup2"));
    let dir = found.expect("this test needs a cgroup2 mount (v2 or hybrid hosts have one)")[1];
    std::path::PathBuf::from(dir)
}

fn own_cgroup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup2 line").to_owned()
}

#[test]
fn a_daemon_in_a_delegated_cgroup_keeps_its_workloads_inside_it() {
    let root = cgroup2_mount();
    let unit_name = format!("paddock-test-{}.service", std::process::id());
    let unit = root.join(&unit_name);
    std::fs::create_dir(&unit).unwrap();
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    // SAFETY: NUL-terminated strings and a one-byte value that outlive the call.
    let set = unsafe {
        libc::setxattr(c(unit.to_str().unwrap()).as_ptr(), c("trusted.delegate").as_ptr(), b"1".as_ptr().cast(), 1, 0)
    };
    assert_eq!(set, 0, "marking {} delegated, as systemd does: {}", unit.display(), std::io::Error::last_os_error());

    let mut d = Daemon::setup();
    d.configure("policy_dir", &format!("cgroup_root = {:?}\npolicy_dir", root.display().to_string()));
    d.cgroup_procs = Some(std::fs::OpenOptions::new().write(true).open(unit.join("cgroup.procs")).unwrap());
    let mut d = d.start(&[]);
    d.write("inside.toml", SLEEPER);
    let pid = d.running_pid("inside");
    let daemon = d.child.as_ref().unwrap().id();
    assert_eq!(own_cgroup(daemon), format!("/{unit_name}/supervisor"), "the daemon moved into a leaf");
    // Its zygote too: a v2 cgroup with a process in it (the unit's own)
    // could not enable the controllers a workload's limits need.
    let children = std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children")).unwrap();
    let zygote = children
        .split_whitespace()
        .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == "paddock-zygote"))
        .expect("the daemon has a zygote");
    assert_eq!(own_cgroup(zygote.parse().unwrap()), format!("/{unit_name}/supervisor"), "the zygote is in the leaf");
    assert_eq!(std::fs::read_to_string(unit.join("cgroup.procs")).unwrap(), "", "nothing is left in the unit's own");
    let group = paddock::sandbox::cgroup::workloads_group(&d.path("state"));
    assert_eq!(own_cgroup(pid as u32), format!("/{unit_name}/{group}/inside"), "the workload is inside the unit");
    assert_eq!(d.terminate(), 0);
    assert!(!unit.join(&group).exists(), "the workload's cgroup, and the daemon's group, are removed");

    for dir in [unit.join("supervisor"), unit.join(&group), unit] {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Two daemons on one host (an installed one and try.sh's, say), each
/// with a workload of the same name: each runs its own, in a cgroup of its
/// own. They shared `paddock/NAME`: the second's start was refused for
/// the first's processes in it, and once the second knew the name, its
/// next start took the first's running workload for one its predecessor
/// left, and killed it.
#[test]
fn two_daemons_with_a_workload_of_one_name_leave_each_other_alone() {
    let first = Daemon::setup().start(&[]);
    // A limit: on cgroup v1 a workload without one has no cgroup.
    let twin = format!("{SLEEPER}[resources]\npids = 16\n");
    first.write("twin.toml", &twin);
    let pid = first.running_pid("twin");
    let second = Daemon::setup();
    let (group, own) = (
        paddock::sandbox::cgroup::workloads_group(&first.path("state")),
        paddock::sandbox::cgroup::workloads_group(&second.path("state")),
    );
    assert!(group != own && group.starts_with("paddock-") && own.starts_with("paddock-"), "{group} {own}");
    let mut second = second.start(&[]);
    second.write("twin.toml", &twin);
    let other = second.running_pid("twin");
    let cgroup = |pid: i64| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup(pid).contains(&format!("/{group}/twin\n")), "{}", cgroup(pid));
    assert!(cgroup(other).contains(&format!("/{own}/twin\n")), "{}", cgroup(other));
    assert_eq!(second.terminate(), 0);
    let second = second.start(&[]);
    second.running_pid("twin");
    let twin = first.workload("twin").unwrap();
    assert_eq!(
        (twin["pid"].as_i64(), twin["restarts"].as_u64()),
        (Some(pid), Some(0)),
        "the first's twin ran on: {twin}"
    );
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok(), "{pid} was killed");
}

#[test]
fn a_sandbox_holds_nothing_of_the_daemon() {
    let mut d = Daemon::setup();
    d.stray_fd = true;
    let d = d.start(&[]);
    d.write("quiet.toml", "command = [\"/bin/sh\", \"-c\", \"ls /proc/$$/fd; exec sleep 1000\"]\n");
    let init = d.running_pid("quiet");
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{init}/fd"))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap().display().to_string())
        .collect();
    let daemon = d.child.as_ref().unwrap().id();
    let daemons: Vec<String> = std::fs::read_dir(format!("/proc/{daemon}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with('/') || l.starts_with("anon_inode"))
        .collect();
    for theirs in &daemons {
        assert!(!held.contains(theirs) || theirs == "/dev/null", "the init holds the daemon's {theirs}: {held:?}");
    }
    assert!(daemons.iter().any(|f| f.ends_with("out/daemon.log")), "the stray descriptor: {daemons:?}");
    assert!(held.len() <= 7, "stdio, the two ends of its channel, a signalfd and the output pipe: {held:?}");
    // The workload: stdin, stdout and stderr only.
    let log = d.path("state/logs/quiet.log");
    d.wait_for("the listing", |_| std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 3));
    let listed: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, text)| text).to_owned())
        .collect();
    assert_eq!(listed, ["0", "1", "2"]);
}

#[test]
fn a_daemon_restart_keeps_every_workloads_slice() {
    let mut d = Daemon::setup().start(&[]);
    d.write("first.toml", SLEEPER);
    d.running_pid("first");
    d.write("second.toml", SLEEPER);
    d.running_pid("second");
    let slice = |d: &Daemon, name: &str| d.workload(name).unwrap()["uid_map"]["host_start"].as_u64().unwrap();
    let second = slice(&d, "second");
    // Removing `first` frees the lower slice; a SIGTERM must not free `second`'s,
    // or the next daemon would hand it the lower one and its files' owner would change.
    std::fs::remove_file(d.path("wl/first.toml")).unwrap();
    d.wait_for("first gone", |d| d.workload("first").is_none());
    assert_eq!(d.terminate(), 0);
    let idmap = std::fs::read_to_string(d.path("state/idmap.json")).unwrap();
    assert!(idmap.contains("\"second\""), "the slice is still allocated after SIGTERM: {idmap}");
    let d = d.start(&[]);
    d.running_pid("second");
    assert_eq!(slice(&d, "second"), second);
}

#[test]
fn files_beside_the_workloads_directory_neither_wake_nor_deafen_the_watcher() {
    let d = Daemon::setup().start(&[]);
    // Events on the parent's other entries are read and dropped...
    std::fs::write(d.path("beside.txt"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // ...and the watcher still hears the next change at once, not at the
    // next resync (30 s, longer than wait_for's patience).
    // Waited for through the log file alone: a status request would wake
    // the loop and hide a deaf watcher.
    let asked = Instant::now();
    d.write("after.toml", "command = [\"/bin/sh\", \"-c\", \"echo up; exec sleep 1000\"]\n");
    let log = d.path("state/logs/after.log");
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("up")) {
        assert!(asked.elapsed() < Duration::from_secs(10), "the change was not heard within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn logs_are_read_from_the_files_when_the_daemon_is_not_running() {
    let mut d = Daemon::setup().start(&[]);
    d.write("lg.toml", &common::sandbox::busybox_manifest("echo one; echo two; exec sleep 1000", ""));
    d.running_pid("lg");
    d.wait_for("its output", |d| String::from_utf8_lossy(&d.paddock(&["logs", "lg"]).stdout).contains("two"));
    assert_eq!(d.terminate(), 0);
    let config = d.path("paddock.toml");
    let out = d.paddock(&["logs", "lg", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the daemon is not running; reading"));
    // A name with no log says where it looked and what to give.
    let out = d.paddock(&["logs", "nolog", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state-dir"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_shutdown_says_what_it_waits_for() {
    let mut d = Daemon::setup().start(&[]);
    d.write(
        "slow.toml",
        &common::sandbox::busybox_manifest(
            "trap 'sleep 1; exit 0' INT; while :; do sleep 0.2; done",
            "[stop]\nsignal = \"SIGINT\"\ntimeout = \"8s\"\n",
        ),
    );
    d.running_pid("slow");
    assert_eq!(d.terminate(), 0);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("stopping: slow: SIGINT, 8 s"), "{log}");
}

/// Any signal a manifest's `stop.signal` names reaches the workload, not
/// only the usual few (the kernel gives a pid namespace's init only what it
/// handles: the init blocks and passes on every one that can be caught).
#[test]
fn a_stop_signal_of_any_kind_reaches_the_workload() {
    let mut d = Daemon::setup().start(&[]);
    std::fs::create_dir(d.path("said")).unwrap();
    std::fs::set_permissions(d.path("said"), std::fs::Permissions::from_mode(0o777)).unwrap();
    for (name, signal, trap) in [("pwr", "SIGPWR", "PWR"), ("segv", "SIGSEGV", "SEGV"), ("alrm", "SIGALRM", "ALRM")] {
        let script = format!(
            "trap 'echo {signal} > /said/{name}; exit 0' {trap}; touch /said/{name}.trapped; while :; do sleep 0.1; done"
        );
        let extra = format!(
            "[stop]\nsignal = \"{signal}\"\ntimeout = \"30s\"\n[[mounts]]\nsource = {:?}\ntarget = \"/said\"\nreadonly = false\n",
            d.path("said").display().to_string()
        );
        d.write(&format!("{name}.toml"), &common::sandbox::busybox_manifest(&script, &extra));
        d.running_pid(name);
        d.wait_for("the trap set", |d| d.path(&format!("said/{name}.trapped")).exists());
        let started = Instant::now();
        let out = d.paddock(&["stop", name]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() < Duration::from_secs(15), "{name}: killed at the timeout, not stopped by {signal}");
        assert_eq!(std::fs::read_to_string(d.path(&format!("said/{name}"))).unwrap(), format!("{signal}\n"));
    }
    assert_eq!(d.terminate(), 0);
}

/// A log past 10 MiB is rotated (`NAME.log.1`) and the init writes a new
/// one; an ask for a rotation that finds the log no longer full (an
/// operator truncated it while the daemon could not answer) rotates
/// nothing: the rotated file is not pushed down, and the output goes on
/// into the current file.
#[test]
fn a_full_log_is_rotated_and_an_ask_that_finds_it_truncated_rotates_nothing() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{Read, Seek};
    /// The daemon, stopped until this is dropped (a failed assertion
    /// must not leave it stopped: its Drop's SIGTERM would wait).
    struct Stopped(Pid);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGCONT);
        }
    }
    let d = Daemon::setup().start(&[]);
    std::fs::create_dir(d.path("go")).unwrap();
    // 110,000 lines of 71 bytes, stamped (28 bytes each): past 10 MiB once.
    let burst = "yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -n 110000";
    let gate = |n: u32| format!("while [ ! -e /go/{n} ]; do sleep 0.05; done");
    // Between the bursts, ticks: one in the new file shows the init
    // writes it (the rotation is made while the first burst goes on).
    let ticks = "while [ ! -e /go/2 ]; do echo tick; sleep 0.05; done";
    let script =
        format!("{}; {burst}; {ticks}; {burst}; echo second done; {}; echo marker; exec sleep 1000", gate(1), gate(3));
    d.write(
        "chatty.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {script:?}]\n[[mounts]]\nsource = {:?}\ntarget = \"/go\"\n",
            d.path("go").display().to_string()
        ),
    );
    d.running_pid("chatty");
    let (log, first, second) =
        (d.path("state/logs/chatty.log"), d.path("state/logs/chatty.log.1"), d.path("state/logs/chatty.log.2"));
    // Its last 64 KiB: the files are 10 MiB, read every few milliseconds.
    let ends_with = |path: &std::path::Path, text: &str| {
        let Ok(mut file) = std::fs::File::open(path) else { return false };
        let size = file.metadata().map_or(0, |m| m.len());
        let mut tail = Vec::new();
        file.seek(std::io::SeekFrom::Start(size.saturating_sub(64 << 10))).unwrap();
        file.read_to_end(&mut tail).unwrap();
        String::from_utf8_lossy(&tail).contains(text)
    };
    let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());

    std::fs::write(d.path("go/1"), "").unwrap();
    d.wait_for("the first burst rotated away, and ticks in the new log", |_| first.exists() && ends_with(&log, "tick"));
    let rotated = size(&first);
    assert!(rotated >= 10 << 20, "the rotated log is the full one: {rotated} bytes");
    assert!(size(&log) < 10 << 20, "the init writes a new log: {} bytes", size(&log));

    // The daemon cannot answer: the init's ask waits in its channel.
    let stopped = Stopped(Pid::from_raw(d.child.as_ref().unwrap().id() as i32));
    kill(stopped.0, Signal::SIGSTOP).unwrap();
    std::fs::write(d.path("go/2"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends_with(&log, "second done") {
        assert!(Instant::now() < deadline, "the second burst was not written");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(size(&log) >= 10 << 20, "full again: {} bytes", size(&log));
    // As `truncate -s 0` (or logrotate's copytruncate) would.
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    drop(stopped);
    std::fs::write(d.path("go/3"), "").unwrap();
    d.wait_for("the marker logged", |_| ends_with(&log, "marker"));
    // The ask was in the channel before the daemon went on, and the
    // status is answered on the same (one-threaded) event loop after it:
    // by now it was answered, and a rotation would have pushed the first
    // file down.
    d.running_pid("chatty");
    assert!(!second.exists(), "a log that was not full was rotated");
    assert_eq!(size(&first), rotated, "the first rotation's file was replaced");
    assert!(size(&log) < 1 << 20, "{} bytes", size(&log));
}

/// A line the workload leaves unfinished when its log is rotated is not
/// carried on unstamped at the top of the new file: there the workload
/// would choose the time its next line shows (and so whether `--since`
/// shows it at all). The old file's line is ended, and the rest of it
/// begins the new file stamped.
#[test]
fn a_line_torn_by_a_rotation_goes_on_stamped_in_the_new_log() {
    let mut d = Daemon::setup().start(&[]);
    std::fs::create_dir(d.path("go")).unwrap();
    // 104,857 lines of 72 bytes, stamped (28 bytes each): 100 bytes short
    // of 10 MiB. Then a line begun and not ended: the log is full, and
    // rotated, while it is unfinished.
    let lines = "yes 01234567890123456789012345678901234567890123456789012345678901234567890 | head -n 104857";
    let script = format!(
        "{lines}; sleep 0.5; printf begun-{}; while [ ! -e /go/1 ]; do sleep 0.05; done; \
         echo; printf '2001-01-01T00:00:00.000000Z forged\\n'; echo after; exec sleep 1000",
        "x".repeat(200)
    );
    d.write(
        "torn.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {script:?}]\n[[mounts]]\nsource = {:?}\ntarget = \"/go\"\n",
            d.path("go").display().to_string()
        ),
    );
    let begun = std::time::SystemTime::now();
    d.running_pid("torn");
    let (log, rotated) = (d.path("state/logs/torn.log"), d.path("state/logs/torn.log.1"));
    d.wait_for("the log rotated", |_| rotated.exists());
    // The init takes the new file as it reads its channel, at once.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(d.path("go/1"), "").unwrap();
    d.wait_for("the last line logged", |_| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("after")));
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let (time, said) = paddock::logline::split_line(line);
        assert!(time.is_some_and(|t| t >= begun - Duration::from_secs(1)), "a line stamped by the workload: {line:?}");
        // The torn line's own newline (ended in the old file) adds no empty line.
        assert!(!said.is_empty(), "an empty line: {text:?}");
    }
    let old = std::fs::read(&rotated).unwrap();
    assert!(old.ends_with(&[b"x".repeat(200).as_slice(), b"\n"].concat()), "the old file's last line is ended");
    assert_eq!(d.terminate(), 0);
}

/// `paddock run` of a manifest named as a running workload (its limits
/// give both a cgroup) runs in a cgroup of its own: its end never kills
/// the workload, and its limits never replace the workload's.
#[test]
fn a_paddock_run_never_changes_a_workloads_slice_even_in_an_older_daemons_table() {
    let d = Daemon::setup();
    d.configure("policy_dir", "resync_interval = \"1h\"\npolicy_dir");
    let mut d = d.start(&[]);
    d.write("keep.toml", &common::sandbox::busybox_manifest("exec sleep 1000", ""));
    let pid = d.running_pid("keep");
    // Adopted by the next daemon, so never given a slice by it.
    d.kill();
    // As an older daemon wrote it: whose each entry is, it does not say.
    let table = d.path("state/idmap.json");
    let mut old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert!(old.as_object_mut().unwrap().remove("daemons").is_some(), "{old}");
    std::fs::write(&table, old.to_string()).unwrap();
    let d = d.start(&[]);
    assert_eq!(d.running_pid("keep"), pid);
    let before = std::fs::read_to_string(&table).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["run", "--slice-size", "131072", "--config"])
        .arg(d.path("paddock.toml"))
        .arg(d.path("wl/keep.toml"))
        // Run, were it not refused, it would end at once.
        .args(["--", "/bin/true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(125), "{said}");
    assert!(said.contains("the id slice of keep is the daemon's workload's"), "{said}");
    assert_eq!(std::fs::read_to_string(&table).unwrap(), before, "nothing changed");
}

/// A workload's manifest deleted while a `paddock run` of it shares its
/// id slice: the slice stays that run's, never given to a new workload
/// while the run's processes have its ids.
#[test]
fn a_deleted_workloads_slice_stays_with_a_paddock_run_that_shares_it() {
    let d = Daemon::setup().start(&[]);
    d.write("shared.toml", &common::sandbox::busybox_manifest("exec sleep 1000", ""));
    let pid = d.running_pid("shared");
    let table = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.path("state/idmap.json")).unwrap()).unwrap()
    };
    let slice = table()["slices"]["shared"].clone();
    assert!(slice.is_object(), "{}", table());
    std::fs::write(d.path("out/shared.toml"), common::sandbox::busybox_manifest("exec sleep 1000", "")).unwrap();
    let run = common::Killed(
        Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["run", "--config"])
            .arg(d.path("paddock.toml"))
            .arg(d.path("out/shared.toml"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sleeping = |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::sandbox::descendants(run.0.id()).iter().any(sleeping) {
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The run says which slice it has, for a daemon that must rebuild the table.
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path("state/runs/shared.lock")).unwrap()).unwrap();
    assert_eq!(recorded, serde_json::json!([slice]));
    std::fs::remove_file(d.path("wl/shared.toml")).unwrap();
    d.wait_for("the workload to be stopped", |d| d.workload("shared").is_none() && gone(pid));
    assert_eq!(table()["slices"]["shared"], slice, "the run's slice was freed under it: {}", table());
    // A new workload is given another.
    d.write("next.toml", &common::sandbox::busybox_manifest("exec sleep 1000", ""));
    d.running_pid("next");
    assert_ne!(table()["slices"]["next"], slice, "{}", table());
    assert!(common::sandbox::descendants(run.0.id()).iter().any(sleeping), "the run went on");
}

#[test]
fn a_paddock_run_named_as_a_workload_leaves_the_workloads_cgroup_alone() {
    let d = Daemon::setup().start(&[]);
    let limits = "[resources]\nmemory = \"64MiB\"\npids = 64\n";
    d.write("cg-shared.toml", &common::sandbox::busybox_manifest("exec sleep 1000", limits));
    let pid = d.running_pid("cg-shared");
    let memory = common::sandbox::memory_cgroup_dir(pid).expect("a v1 memory cgroup, or v2's");
    std::fs::write(
        d.path("out/cg-shared.toml"),
        common::sandbox::busybox_manifest("exit 0", "[resources]\nmemory = \"32MiB\"\n"),
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["run", "--config"])
        .arg(d.path("paddock.toml"))
        .arg(d.path("out/cg-shared.toml"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "the run's end killed the workload");
    assert_eq!(d.running_pid("cg-shared"), pid);
    let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(memory.join("memory.max")))
        .expect("the workload's memory limit");
    assert_eq!(limit.trim(), (64u64 << 20).to_string(), "the workload's limit is its own");
}

/// With no thread to be had (the daemon's pids limit reached: a host out
/// of processes), the work that needs one waits for it instead of taking
/// down the task that asked: a workload stopped meanwhile is seen to end
/// once threads can be started again (it stayed `stopping` for good).
#[test]
fn a_host_out_of_threads_delays_a_stop_but_does_not_lose_it() {
    let pids = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/paddock-test-threads-{}", std::process::id()));
    assert!(
        std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists(),
        "this test needs the v1 pids hierarchy at /sys/fs/cgroup/pids (this host has none)"
    );
    std::fs::create_dir(&pids).unwrap();
    // Lifted and removed however the test ends.
    struct Limited(std::path::PathBuf);
    impl Drop for Limited {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0.join("pids.max"), "max");
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let limited = Limited(pids.clone());
    let mut d = Daemon::setup();
    // No rescan meanwhile: the daemon's blocking threads end once idle.
    d.configure("policy_dir", "resync_interval = \"10m\"\npolicy_dir");
    d.cgroup_procs = Some(std::fs::OpenOptions::new().write(true).open(pids.join("cgroup.procs")).unwrap());
    let mut d = d.start(&[]);
    d.write("w.toml", SLEEPER);
    let sleeper = d.running_pid("w");
    // tokio lets an idle blocking thread go after 10 s.
    std::thread::sleep(Duration::from_secs(12));
    // Its sandbox (an init and the sleeper) is in the cgroup too: what it
    // frees as it ends is not room for a thread either.
    let now: u32 = std::fs::read_to_string(pids.join("pids.current")).unwrap().trim().parse().unwrap();
    std::fs::write(pids.join("pids.max"), (now - 2).to_string()).unwrap();
    let out = d.paddock(&["stop", "--no-block", "w"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(pids.join("pids.max"), "max").unwrap();
    d.wait_for("w stopped", |d| d.workload("w").is_some_and(|w| w["state"] == "stopped"));
    assert!(gone(sleeper));
    // Its end as it was: the sandbox's report reached the daemon.
    assert_eq!(d.workload("w").unwrap()["last_exit"], "SIGTERM");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("no thread can be started") && log.contains("threads can be started again"), "{log}");
    // Said once, not a panic's lines at every try.
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(d.terminate(), 0);
    drop(limited);
}

/// A crash loop and its end say so where an operator looks: each failed
/// run is a warning, the give-up an error naming what to do, and
/// `STATUS=` counts what waits out a restart delay (it said "0 running,
/// 0 failed" of a crash loop) (helper-103).
#[test]
fn a_crash_loop_is_warned_of_its_give_up_is_an_error_and_status_counts_it() {
    let (_notify, sock_path, sock) = common::daemon::notify_socket(Duration::from_secs(10));
    let d = Daemon::setup();
    d.write(
        "crash.toml",
        "command = [\"/bin/sh\", \"-c\", \"exit 3\"]\n[restart]\npolicy = \"on-failure\"\nmax_retries = 1\nbackoff = \"2s\"\n",
    );
    let mut d = d.start(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("0 running, 1 restarting, 0 failed, 0 invalid")) {
        let n = sock.recv(&mut buf).expect("STATUS= says it is restarting");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    d.wait_for("crash gave up", |d| d.workload("crash").is_some_and(|w| w["state"] == "failed"));
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let exits: Vec<&str> = log.lines().filter(|l| l.contains(" exited ")).collect();
    assert_eq!(exits.len(), 2, "{log}");
    assert!(exits.iter().all(|l| l.contains(" WARN ")), "a failed run is a warning: {exits:?}");
    let gave_up = log.lines().find(|l| l.contains("gave up")).unwrap_or_else(|| panic!("no give-up in {log}"));
    assert!(gave_up.contains(" ERROR ") && gave_up.contains("`paddock start crash`"), "{gave_up}");
    // A start that fails as often gives up too, and says so (helper-105).
    d.write(
        "missing.toml",
        "command = [\"/no/such/program\"]\n[restart]\npolicy = \"on-failure\"\nmax_retries = 1\nbackoff = \"0s\"\n",
    );
    d.wait_for("missing gave up", |d| d.workload("missing").is_some_and(|w| w["state"] == "failed"));
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains(" ERROR ")
            && l.contains("gave up after 2 consecutive failures")
            && l.contains("workload=missing")),
        "{log}"
    );
    // A run ended by a stop is no warning.
    d.write("calm.toml", SLEEPER);
    d.running_pid("calm");
    assert!(d.paddock(&["stop", "calm"]).status.success());
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let calm = log.lines().find(|l| l.contains(" exited ") && l.contains("calm")).unwrap();
    assert!(calm.contains(" INFO "), "{calm}");
    assert_eq!(d.terminate(), 0);
}
