//! Upgrading in place: the daemon re-executes the binary installed at its
//! path, keeping its pid and every workload. (Root and user namespaces
//! required.)

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, SLEEPER, gone};

/// Installs the build's binary at `path` as a package manager does: a new
/// file renamed over the old one (whose inode the running daemon keeps).
/// Copied by `cp`, not by this process: a descriptor open for writing in
/// here would be inherited by whatever another test's thread forks
/// meanwhile, and the binary's exec would fail (ETXTBSY) until that child
/// execs.
fn install(path: &Path) {
    let tmp = path.with_extension("new");
    let copied = std::process::Command::new("cp").arg(env!("CARGO_BIN_EXE_paddock")).arg(&tmp).status().unwrap();
    assert!(copied.success(), "cp to {}", tmp.display());
    std::fs::rename(&tmp, path).unwrap();
}

/// A daemon started from a copy of the build installed under its test
/// directory (so that a test can replace it, as a package upgrade does),
/// and the copy's path.
fn upgradable() -> (Daemon, std::path::PathBuf) {
    upgradable_with(&[])
}

/// `upgradable`, the daemon started with `env`.
fn upgradable_with(env: &[(&str, &str)]) -> (Daemon, std::path::PathBuf) {
    let mut d = Daemon::setup();
    std::fs::create_dir(d.path("bin")).unwrap();
    let binary = d.path("bin/paddock");
    install(&binary);
    d.binary = Some(binary.clone());
    (d.start(env), binary)
}

/// `upgradable`, running `web`: the daemon, its binary's copy, web's pid
/// and the daemon's.
fn upgradable_web() -> (Daemon, std::path::PathBuf, i64, u32) {
    let (d, binary) = upgradable();
    d.write("web.toml", SLEEPER);
    let web = d.running_pid("web");
    let daemon = d.child.as_ref().unwrap().id();
    (d, binary, web, daemon)
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap().display().to_string()
}

#[test]
fn a_replaced_binary_is_taken_on_reload_and_on_upgrade_with_every_workload_kept() {
    let (mut d, binary) = upgradable();
    d.write("web.toml", SLEEPER);
    d.write(
        "db.toml",
        "command = [\"/bin/sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo $i; sleep 0.01; done\"]\n",
    );
    let web = d.running_pid("web");
    let db = d.running_pid("db");
    let daemon = d.child.as_ref().unwrap().id();

    // A package upgrade replaces the file; `systemctl reload` sends SIGHUP.
    install(&binary);
    assert!(exe_of(daemon).ends_with("(deleted)"));
    let asked = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(daemon as i32, libc::SIGHUP) };
    d.wait_for("the new image", |_| !exe_of(daemon).ends_with("(deleted)"));
    d.wait_for("the new image to answer", |d| d.workload("web").is_some_and(|w| w["state"] == "running"));
    let took = asked.elapsed();
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the same process runs on");
    assert_eq!(d.running_pid("web"), web, "web kept running");
    assert_eq!(d.running_pid("db"), db, "db kept running");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // The same with `paddock upgrade`, which waits and says so.
    install(&binary);
    let out = d.paddock(&["upgrade"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("the daemon answers again: 2 workloads running"), "{text}");
    assert_eq!((d.running_pid("web"), d.running_pid("db")), (web, db));
    // Its output went on through both: every number once, in order.
    std::thread::sleep(Duration::from_millis(100));
    let log = std::fs::read_to_string(d.path("state/logs/db.log")).unwrap();
    let numbers: Vec<u64> = log.lines().filter_map(|l| l.split_once(' ')?.1.parse().ok()).collect();
    assert!(numbers.len() > 20, "{log}");
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "a line lost or repeated: {numbers:?}");
    // Still supervised: a stop reaches it.
    assert!(d.paddock(&["stop", "web"]).status.success());
    d.wait_for("web stopped", |d| d.workload("web").is_some_and(|w| w["state"] == "stopped"));
    assert!(gone(web));
    assert_eq!(d.terminate(), 0);
}

/// A running workload's LAST EXIT (how the run before it ended) is still
/// shown after an upgrade, as before it (the kept state holds it).
#[test]
fn an_upgrade_keeps_a_running_workloads_last_exit() {
    let (mut d, _binary) = upgradable();
    // Written by the first run (which then exits 3), read by the second.
    std::fs::write(d.path("out/ran"), "").unwrap();
    std::fs::set_permissions(d.path("out/ran"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    d.write(
        "flaky.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"if [ -s /out/ran ]; then exec sleep 1000; fi; echo x >> /out/ran; exit 3\"]\n[restart]\nbackoff = \"0s\"\n[[mounts]]\nsource = {:?}\ntarget = \"/out\"\nreadonly = false\n",
            d.path("out").display().to_string()
        ),
    );
    d.wait_for("flaky's second run", |d| {
        d.workload("flaky").is_some_and(|w| w["state"] == "running" && w["restarts"] == 1)
    });
    let pid = d.running_pid("flaky");
    assert_eq!(d.workload("flaky").unwrap()["last_exit"], 3);
    let out = d.paddock(&["upgrade"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let w = d.workload("flaky").unwrap();
    assert_eq!((w["pid"].as_i64(), w["restarts"].as_u64()), (Some(pid), Some(1)), "adopted: {w}");
    assert_eq!(w["last_exit"], 3, "the previous run's exit, as before the upgrade: {w}");
    assert_eq!(d.terminate(), 0);
}

/// The daemon raises its own open-files limit; its workloads get the one
/// it was started with, and still do after an upgrade, whose image starts
/// with the raised one.
#[test]
fn an_upgrade_keeps_the_open_files_limit_workloads_get() {
    let mut d = Daemon::setup();
    std::fs::create_dir(d.path("bin")).unwrap();
    let binary = d.path("bin/paddock");
    install(&binary);
    d.binary = Some(binary.clone());
    d.nofile_soft = Some(256);
    let d = d.start(&[]);
    let soft_of = |pid: i64| {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
        line.split_whitespace().nth(3).unwrap().to_owned()
    };
    d.write("before.toml", SLEEPER);
    assert_eq!(soft_of(d.running_pid("before")), "256");
    install(&binary);
    let out = d.paddock(&["upgrade"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.write("after.toml", SLEEPER);
    assert_eq!(soft_of(d.running_pid("after")), "256", "a workload started by the upgraded image");
    install(&binary);
    assert!(d.paddock(&["upgrade"]).status.success());
    d.write("later.toml", SLEEPER);
    assert_eq!(soft_of(d.running_pid("later")), "256", "and by the one after it");
}

/// The children of `pid` (every thread's), from /proc.
fn children(pid: u32) -> Vec<i64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i64>>())
        .collect()
}

#[test]
fn an_exec_session_cut_by_two_upgrades_ends_and_is_reaped_by_the_last_image() {
    // The old image's `__enter` hangs its command up when the exec closes
    // its channel, and ends: still the daemon's child, it is the new
    // image's to reap, or it stays a zombie as long as the daemon runs.
    // Its command ignores the hang-up, so `__enter` lives on for its
    // grace (10 s) past a second upgrade, which hands it on again.
    let (d, binary, _, daemon) = upgradable_web();
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["exec", "--socket"])
        .arg(d.path("paddock.sock"))
        .args(["web", "--", "/bin/sh", "-c", "trap '' HUP; exec /bin/sleep 779"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    d.wait_for("the entered sleep", |_| !common::daemon::processes(&["/bin/sleep", "779"]).is_empty());
    let sleep = common::daemon::processes(&["/bin/sleep", "779"])[0];
    let is_enter =
        |pid: &i64| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.ends_with(b"__enter\x003\x00"));
    let entered: Vec<i64> = children(daemon).into_iter().filter(is_enter).collect();
    assert_eq!(entered.len(), 1, "one __enter: {:?}", children(daemon));
    for _ in 0..2 {
        install(&binary);
        let out = d.paddock(&["upgrade"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!gone(entered[0]), "__enter waits out its grace");
    let deadline = Instant::now() + Duration::from_secs(25);
    while common::daemon::alive(entered[0]) {
        assert!(Instant::now() < deadline, "__enter {} was not reaped (gone: {})", entered[0], gone(entered[0]));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(sleep), "its command ended with it");
    let _ = client.wait();
    let mut d = d;
    assert_eq!(d.terminate(), 0);
}

/// Every request made while the daemon re-executes itself is answered:
/// by this image before its exec, or by the next one, which inherits the
/// listening socket. None sees its connection closed with no answer.
#[test]
fn no_request_made_during_an_upgrade_goes_unanswered() {
    let (mut d, binary, web, _) = upgradable_web();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (asked, unanswered) = std::thread::scope(|s| {
        let asker = s.spawn(|| {
            let (mut asked, mut unanswered) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                asked += 1;
                match common::daemon::ask_status(&d, Duration::from_secs(10)) {
                    Ok(answer) if answer.starts_with('{') => {}
                    other => unanswered.push(format!("{other:?}")),
                }
            }
            (asked, unanswered)
        });
        for _ in 0..3 {
            install(&binary);
            let out = d.paddock(&["upgrade"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        asker.join().unwrap()
    });
    assert!(asked > 30, "asked {asked} times");
    assert!(unanswered.is_empty(), "{} of {asked} requests unanswered: {unanswered:?}", unanswered.len());
    assert_eq!(d.running_pid("web"), web);
    assert_eq!(d.terminate(), 0);
}

/// A client that connects and sends nothing holds an upgrade up for
/// 200 ms at most: its connection is then cut, and the upgrade goes on.
#[test]
fn a_client_that_sends_nothing_does_not_hold_up_an_upgrade() {
    use std::io::Read;
    let (mut d, binary, web, _) = upgradable_web();
    let mut silent = std::os::unix::net::UnixStream::connect(d.path("paddock.sock")).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    install(&binary);
    let asked = Instant::now();
    let out = d.paddock(&["upgrade"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    let mut got = Vec::new();
    assert_eq!(silent.read_to_end(&mut got).unwrap(), 0, "cut, with nothing said: {got:?}");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("are cut off by the exec"), "{log}");
    assert_eq!(d.running_pid("web"), web);
    assert_eq!(d.terminate(), 0);
}

/// An upgrade waits for what is kept (a hold here) to be on disk: the new
/// image reads it back. When it cannot be written (a full disk; here a
/// directory in its file's place), the upgrade is refused, saying so, and
/// the hold holds across the upgrade taken once it is written.
#[test]
fn an_upgrade_is_refused_while_what_is_kept_cannot_be_written() {
    let (mut d, binary, web, _) = upgradable_web();
    let kept = d.path("state/workloads/web.json");
    let _ = std::fs::remove_file(&kept);
    std::fs::create_dir_all(&kept).unwrap();
    let out = d.paddock(&["stop", "web"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("warning: this could not be written"), "{said}");
    d.wait_for("web stopped", |d| d.workload("web").is_some_and(|w| w["state"] == "stopped"));
    assert!(gone(web));
    install(&binary);
    let out = d.paddock(&["upgrade"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("cannot be written"), "{said}");
    std::fs::remove_dir(&kept).unwrap();
    d.wait_for("the hold written", |_| kept.is_file());
    let out = d.paddock(&["upgrade"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.workload("web").unwrap()["state"], "stopped", "the hold held");
    assert_eq!(d.terminate(), 0);
}

/// A daemon running `web`, its pid, and the socket it listens on.
fn running_web() -> (Daemon, i64, std::path::PathBuf) {
    let d = Daemon::setup().start(&[]);
    d.write("web.toml", SLEEPER);
    let web = d.running_pid("web");
    let socket = d.path("paddock.sock");
    (d, web, socket)
}

/// Names another control socket in the daemon's configuration.
fn move_socket(d: &Daemon, from: &std::path::Path, to: &std::path::Path) {
    d.configure(
        &format!("socket = {:?}", from.display().to_string()),
        &format!("socket = {:?}", to.display().to_string()),
    );
}

/// A control socket moved in the configuration is taken at an upgrade (the
/// new image reads the configuration again): it listens where the
/// configuration says, the old path is gone, and `paddock upgrade` asked
/// at the old one finds it there.
#[test]
fn an_upgrade_listens_where_the_configuration_puts_the_socket_now() {
    let (mut d, web, old) = running_web();
    let new = d.path("ctl/paddock.sock");
    move_socket(&d, &old, &new);
    let config = d.path("paddock.toml");
    let out = d.paddock(&["upgrade", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("the daemon answers again: 1 workloads running"), "{text}");
    assert!(!old.exists(), "the old socket is left");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["status", "--json", "--socket"])
        .arg(&new)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let workloads: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(workloads[0]["pid"], web, "web kept running: {workloads}");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(d.child.as_ref().unwrap().id() as i32, libc::SIGTERM) };
    assert!(d.child.as_mut().unwrap().wait().unwrap().success());
    assert!(!new.exists(), "the daemon removes the socket it listens on");
    assert!(gone(web));
}

/// `--pid` asks the daemon at the socket that process listens on: after
/// `socket` moved in the configuration, `paddock reload` by the file finds
/// no one, by the pid (as the unit's ExecReload asks) it does, and so does
/// an upgrade, which waits for the daemon at its new socket.
#[test]
fn a_daemon_is_found_by_its_pid_wherever_its_socket_is() {
    let (mut d, web, old) = running_web();
    let new = d.path("ctl/paddock.sock");
    move_socket(&d, &old, &new);
    let pid = d.child.as_ref().unwrap().id().to_string();
    let config = d.path("paddock.toml").display().to_string();
    let paddock = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(args)
            .env_remove("PADDOCK_SOCKET")
            .output()
            .unwrap()
    };
    let said = |out: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let by_file = paddock(&["reload", "--config", &config]);
    assert_eq!(by_file.status.code(), Some(1), "{}", said(&by_file));
    assert!(said(&by_file).contains(&format!("cannot reach the daemon at {}", new.display())), "{}", said(&by_file));
    let by_pid = paddock(&["reload", "--pid", &pid]);
    assert!(by_pid.status.success(), "{}", said(&by_pid));
    let up = paddock(&["upgrade", "--pid", &pid]);
    assert!(up.status.success(), "{}", said(&up));
    assert!(said(&up).contains("the daemon answers again: 1 workloads running"), "{}", said(&up));
    assert!(new.exists() && !old.exists());
    let status = paddock(&["status", "--json", "--pid", &pid]);
    let workloads: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(workloads[0]["pid"], web, "web kept running: {workloads}");
    // A process that listens on no socket of paddock's.
    let me = std::process::id().to_string();
    let none = paddock(&["status", "--pid", &me]);
    assert_eq!(none.status.code(), Some(1));
    assert!(said(&none).contains(&format!("cannot find the control socket of process {me}")), "{}", said(&none));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(d.child.as_ref().unwrap().id() as i32, libc::SIGTERM) };
    assert!(d.child.as_mut().unwrap().wait().unwrap().success());
    assert!(gone(web));
}

/// The socket `--pid` finds is the one that process listens on, as the
/// kernel has it, not a line of /proc/net/unix, which anyone can write to:
/// a socket's path is printed there as it is, so any user's socket whose
/// path holds a newline adds a line of its making (the daemon's socket's
/// inode, and a path of its choosing: the request would go there), and
/// one whose path holds a byte that is not UTF-8 made the table
/// unreadable. Either stopped `systemctl reload paddock` (`reload --pid
/// $MAINPID`), by which an upgrade is applied.
#[test]
fn a_daemon_found_by_its_pid_is_not_misled_by_anyones_socket_paths() {
    use std::os::unix::ffi::OsStrExt;
    let mut d = Daemon::setup().start(&[]);
    let pid = d.child.as_ref().unwrap().id().to_string();
    let socket = d.path("paddock.sock");
    let table = std::fs::read("/proc/net/unix").unwrap();
    let line = table
        .split(|b| *b == b'\n')
        .find(|line| line.ends_with(format!(" {}", socket.display()).as_bytes()))
        .expect("the daemon's socket is in the table");
    let inode = String::from_utf8_lossy(line).split_whitespace().nth(6).unwrap().to_owned();
    // Short: a socket's path holds at most 107 bytes.
    let dir = tempfile::Builder::new().prefix("p").tempdir().unwrap();
    let mut bound = Vec::new();
    for n in 0..30 {
        let line = format!("{n}\n0000000000000000: 00000002 00000000 00010000 0001 01 {inode} ");
        std::fs::create_dir(dir.path().join(&line)).unwrap();
        bound.push(std::os::unix::net::UnixDatagram::bind(dir.path().join(line).join("x")).unwrap());
    }
    bound.push(std::os::unix::net::UnixDatagram::bind(dir.path().join(std::ffi::OsStr::from_bytes(b"\xff"))).unwrap());
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["status", "--json", "--pid", &pid])
        .env_remove("PADDOCK_SOCKET")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr));
    assert!(status.status.success(), "{said}");
    drop(bound);
    assert_eq!(d.terminate(), 0);
}

/// Where the socket the configuration names now cannot be listened on
/// (another listens there), the upgraded daemon keeps the old one.
#[test]
fn an_upgrade_keeps_the_old_socket_when_the_new_one_cannot_be_listened_on() {
    let (mut d, web, old) = running_web();
    let taken = d.path("taken.sock");
    let other = std::os::unix::net::UnixListener::bind(&taken).unwrap();
    move_socket(&d, &old, &taken);
    let out = d.paddock(&["upgrade"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("the daemon answers again: 1 workloads running"), "{text}");
    assert_eq!(d.running_pid("web"), web);
    assert!(std::os::unix::net::UnixStream::connect(&taken).is_ok(), "the other listener's socket is left alone");
    assert_eq!(d.terminate(), 0);
    assert!(!old.exists(), "the daemon removes the socket it listens on");
    assert!(taken.exists(), "and never the other listener's");
    drop(other);
}

/// A configuration the new binary would not start with (edited since the
/// daemon read it) refuses the upgrade with what the binary said: the
/// daemon goes on as it was, its workloads running, rather than exit.
/// Once mended, the upgrade goes through.
#[test]
fn an_upgrade_is_refused_when_the_new_binary_would_not_start_with_the_configuration() {
    let (mut d, web, _) = running_web();
    let daemon = d.child.as_ref().unwrap().id();
    d.configure("[remap]\n", "resync_interval = \"0s\"\n[remap]\n");
    let out = d.paddock(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not upgraded") && err.contains("every workload keeps running"), "{err}");
    let config = d.path("paddock.toml").display().to_string();
    assert!(err.contains(&format!("{config}:7:")) && err.contains("resync_interval"), "what the binary said: {err}");
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the daemon exited");
    assert_eq!(d.running_pid("web"), web);
    d.configure("resync_interval = \"0s\"\n", "");
    let out = d.paddock(&["upgrade"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("the daemon answers again: 1 workloads running"), "{text}");
    assert_eq!(d.child.as_ref().unwrap().id(), daemon);
    assert_eq!(d.running_pid("web"), web);
    assert_eq!(d.terminate(), 0);
}

/// A binary older than `paddock daemon --validate` (clap refuses the flag)
/// is re-executed unchecked, with a warning: a downgrade works as before.
#[test]
fn an_upgrade_to_a_binary_older_than_the_check_goes_through_with_a_warning() {
    let (mut d, binary, web, daemon) = upgradable_web();
    // The older binary: refuses the flag as clap does, runs the rest.
    let real = d.path("bin/paddock.old");
    install(&real);
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *--validate*) echo \"error: unexpected argument '--validate' found\" >&2; exit 2;; esac\nexec {} \"$@\"\n",
        real.display()
    );
    install_script(&binary, &script);
    let out = d.paddock(&["upgrade"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(exe_of(daemon), real.display().to_string(), "the older binary runs");
    assert_eq!(d.running_pid("web"), web);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("the new binary cannot check the configuration"), "{log}");
    assert_eq!(d.terminate(), 0);
}

/// Installs `text` as an executable script at `path`, renamed there as
/// `install` does, and written by another process for the same reason.
fn install_script(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    let made = std::process::Command::new("/bin/sh")
        .args(["-c", "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"", "sh", text])
        .arg(&tmp)
        .status()
        .unwrap();
    assert!(made.success(), "writing {}", tmp.display());
    std::fs::rename(&tmp, path).unwrap();
}

/// Replaces the daemon's binary with a script whose check (`--validate`)
/// adds a line to `out/checks` and waits until `out/go` exists, then runs
/// the build as itself; returns the build's copy it runs.
fn gated_check(d: &Daemon, binary: &Path) -> std::path::PathBuf {
    let real = d.path("bin/paddock.real");
    install(&real);
    let (checks, go) = (d.path("out/checks"), d.path("out/go"));
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *--validate*) echo checked >> {checks:?}; while [ ! -e {go:?} ]; do sleep 0.05; done;; esac\nexec {real:?} \"$@\"\n"
    );
    install_script(binary, &script);
    real
}

/// Whether the binary at `binary` checks the configuration now.
fn checking(binary: &Path) -> bool {
    let path = binary.to_str().unwrap().as_bytes();
    !common::daemon::processes_where(|c| {
        c.windows(path.len()).any(|w| w == path) && c.windows(10).any(|w| w == b"--validate")
    })
    .is_empty()
}

/// The new binary's check of the configuration runs beside the daemon's
/// loop: while it takes its time, the daemon answers and restarts its
/// workloads as ever, and an upgrade asked meanwhile is served by the
/// same exec once the check passes.
#[test]
fn the_daemon_goes_on_while_the_new_binary_checks_the_configuration() {
    let (mut d, binary, web, daemon) = upgradable_web();
    let real = gated_check(&d, &binary);
    std::thread::scope(|scope| {
        let first = scope.spawn(|| d.paddock(&["upgrade"]));
        d.wait_for("the check to begin", |_| checking(&binary));
        let second = scope.spawn(|| d.paddock(&["upgrade"]));
        let (took, _) = d.timed_status();
        assert!(took < Duration::from_secs(1), "status waited {took:?} for the check");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(web as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        d.wait_for("web restarted", |d| d.workload("web").is_some_and(|w| w["state"] == "running" && w["pid"] != web));
        assert!(checking(&binary), "the check ended");
        // The second upgrade has been asked (its client is a moment's work).
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(d.path("out/go"), "").unwrap();
        for upgrade in [first, second] {
            let out = upgrade.join().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            assert!(text.contains("re-executing"), "{text}");
        }
    });
    assert_eq!(exe_of(daemon), real.display().to_string(), "upgraded once the check passed");
    let checks = std::fs::read_to_string(d.path("out/checks")).unwrap();
    assert_eq!(checks.lines().count(), 1, "one check serves both");
    assert_eq!(d.terminate(), 0);
}

/// A binary replaced again while it was checked (a second package
/// upgrade) is not executed unchecked: the file there now is checked, and
/// its refusal is the answer.
#[test]
fn a_binary_replaced_during_its_check_is_checked_again_before_any_exec() {
    let (mut d, binary, web, daemon) = upgradable_web();
    let real = gated_check(&d, &binary);
    std::thread::scope(|scope| {
        let upgrade = scope.spawn(|| d.paddock(&["upgrade"]));
        d.wait_for("the check to begin", |_| checking(&binary));
        // The second binary refuses the configuration (and would run were it not checked).
        let script = format!(
            "#!/bin/sh\ncase \"$*\" in *--validate*) echo 'the second binary refuses' >&2; exit 78;; esac\nexec {} \"$@\"\n",
            real.display()
        );
        install_script(&binary, &script);
        // The first check passes, of the file that was there.
        std::fs::write(d.path("out/go"), "").unwrap();
        let out = upgrade.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("the second binary refuses"), "{err}");
    });
    assert!(exe_of(daemon).ends_with("(deleted)"), "executed unchecked: {}", exe_of(daemon));
    assert_eq!(d.running_pid("web"), web);
    assert_eq!(d.terminate(), 0);
}

/// A stop asked while the new binary checks the configuration: the
/// upgrade is not made, its client is told so, the check is cut short
/// (with what it started), and the daemon stops as asked.
#[test]
fn a_stop_during_the_new_binarys_check_answers_its_client_and_ends_the_check() {
    let (mut d, binary, _, daemon) = upgradable_web();
    gated_check(&d, &binary);
    std::thread::scope(|scope| {
        let upgrade = scope.spawn(|| d.paddock(&["upgrade"]));
        d.wait_for("the check to begin", |_| checking(&binary));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let out = upgrade.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("asked to stop: not upgraded"), "{err}");
    });
    let began = Instant::now();
    assert_eq!(d.terminate(), 0);
    assert!(began.elapsed() < Duration::from_secs(5), "the exit waited {:?}", began.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while checking(&binary) {
        assert!(Instant::now() < deadline, "the check runs on");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A SIGHUP after a package upgrade whose binary would not start with the
/// configuration: refused, and the daemon does what a reload does instead
/// (it rescans and says READY=1 after its RELOADING=1, as systemd waits
/// for), its workloads running.
#[test]
fn a_sighup_whose_upgrade_is_refused_rescans_and_says_ready() {
    let (_notify, sock_path, sock) = common::daemon::notify_socket(Duration::from_secs(10));
    let (mut d, binary) = upgradable_with(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    d.write("web.toml", SLEEPER);
    let web = d.running_pid("web");
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).expect("READY=1 within 10 s");
        if buf[..n].starts_with(b"READY=1") {
            break;
        }
    }
    install(&binary);
    d.configure("[remap]\n", "resync_interval = \"0s\"\n[remap]\n");
    let daemon = d.child.as_ref().unwrap().id();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(daemon as i32, libc::SIGHUP) };
    let mut seen: Vec<String> = Vec::new();
    while !seen.last().is_some_and(|m| m.starts_with("READY=1")) {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default();
            panic!("no READY=1 after the SIGHUP ({e}): {seen:?}\n{log}")
        });
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let lifecycle: Vec<&str> = seen.iter().map(String::as_str).filter(|m| !m.starts_with("STATUS=")).collect();
    assert_eq!(lifecycle.first(), Some(&"RELOADING=1"), "{seen:?}");
    assert!(exe_of(daemon).ends_with("(deleted)"), "not re-executed");
    assert_eq!(d.running_pid("web"), web);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("not upgraded"), "{log}");
    d.configure("resync_interval = \"0s\"\n", "");
    assert_eq!(d.terminate(), 0);
}

/// An edit of the daemon's configuration is taken by a reload (`paddock
/// reload`, as SIGHUP and `systemctl reload`): the daemon re-executes
/// itself, as an upgrade does, every workload kept running, and reads it
/// again. (A reload only rescanned the manifests: the edit was ignored,
/// silently, until the daemon's next start.)
#[test]
fn a_reload_after_the_configuration_changed_reads_it_again_every_workload_kept() {
    let (mut d, _, web, daemon) = upgradable_web();
    let reload = |d: &Daemon| {
        let out = d.paddock(&["reload"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Refused under baseline, the default policy: the host's network.
    d.write("edge.toml", "command = [\"/bin/sleep\", \"1000\"]\n[namespaces]\nnetwork = \"host\"\n");
    d.wait_for("edge refused", |d| d.workload("edge").is_some_and(|w| w["state"] == "invalid"));
    assert!(reload(&d).contains("policy baseline refuses this"), "a rescan");
    d.configure("policy_dir = ", "policies = [\"privileged\"]\npolicy_dir = ");
    let out = reload(&d);
    assert!(out.starts_with("re-executing "), "{out}");
    d.wait_for("edge running under the new policy", |d| d.workload("edge").is_some_and(|w| w["state"] == "running"));
    assert_eq!(d.running_pid("web"), web, "kept running");
    assert_eq!(d.child.as_ref().unwrap().id(), daemon);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let why = format!("the configuration changed since it was read ({})", d.path("paddock.toml").display());
    assert!(log.contains(&why), "{log}");
    // Read since: a reload rescans again.
    assert_eq!(reload(&d), "nothing changed\n");
    assert_eq!(d.terminate(), 0);
}

/// A policy tightened and taken by a reload applies to what runs: a
/// workload whose manifest it refuses is stopped, its file `invalid`, as
/// the README says (an edit of a manifest keeps the running version; a
/// stricter host does not).
#[test]
fn a_reload_after_a_policy_is_tightened_stops_what_it_refuses() {
    let (mut d, _, web, daemon) = upgradable_web();
    // restricted wants memory and pids limits, which SLEEPER has not.
    d.configure("policy_dir = ", "policies = [\"restricted\"]\npolicy_dir = ");
    let out = d.paddock(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("re-executing "));
    d.wait_for("web refused and stopped", |d| d.workload("web").is_some_and(|w| w["state"] == "invalid") && gone(web));
    assert_eq!(d.child.as_ref().unwrap().id(), daemon);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("does not pass today's checks: it is stopped"), "{log}");
    assert_eq!(d.terminate(), 0);
}

/// What a re-execution cannot change (where the records and id slices
/// are, and the rest of `Fixed`) is refused by a reload's check, saying
/// to restart instead, the daemon going on as it was; the next image
/// would have found no record, left the workloads running unsupervised
/// and started each again with its slice given anew.
#[test]
fn a_reload_refuses_a_state_dir_moved_in_the_configuration() {
    let (mut d, _, web, daemon) = upgradable_web();
    d.configure("state_dir = ", &format!("state_dir = {:?}\n#", d.path("state2").display().to_string()));
    let out = d.paddock(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let said = format!(
        "state_dir is {} here, {} in the running daemon: a re-execution (a reload or an upgrade) cannot change that",
        d.path("state2").display(),
        d.path("state").display()
    );
    assert!(err.contains(&said) && err.contains("systemctl restart paddock"), "{err}");
    assert_eq!(d.running_pid("web"), web, "kept running");
    assert_eq!(d.child.as_ref().unwrap().id(), daemon);
    assert!(!d.path("state2").exists(), "nothing made there");
    // Put back: the reload goes through.
    d.configure(&format!("state_dir = {:?}\n#", d.path("state2").display().to_string()), "state_dir = ");
    let out = d.paddock(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.running_pid("web"), web);
    assert_eq!(d.terminate(), 0);
}

/// A configuration edited while the new binary checked it is checked
/// again before any exec: the new image would read the edit unchecked,
/// and one that refused it would end the daemon (exit 78, not restarted
/// by systemd), leaving the workloads unsupervised.
#[test]
fn a_configuration_edited_during_the_check_is_checked_again_before_any_exec() {
    let (mut d, binary, web, daemon) = upgradable_web();
    gated_check(&d, &binary);
    std::thread::scope(|scope| {
        let upgrade = scope.spawn(|| d.paddock(&["upgrade"]));
        d.wait_for("the check to begin", |_| checking(&binary));
        d.configure("policy_dir = ", "resync_interval = \"0s\"\npolicy_dir = ");
        std::fs::write(d.path("out/go"), "").unwrap();
        let out = upgrade.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("resync_interval cannot be 0"), "{err}");
    });
    let checks = std::fs::read_to_string(d.path("out/checks")).unwrap();
    assert_eq!(checks.lines().count(), 2, "checked again");
    assert!(exe_of(daemon).ends_with("(deleted)"), "not re-executed: {}", exe_of(daemon));
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("the configuration was edited while it was checked: checking again"), "{log}");
    assert_eq!(d.running_pid("web"), web);
    assert_eq!(d.terminate(), 0);
}

/// The settings a running daemon hands its next image (and the check of
/// it) come through the environment: a value that cannot be read (another
/// version's form, or anyone's) is said and not compared, never a reason
/// to refuse a start; one that can be read and differs is refused by the
/// check.
#[test]
fn settings_handed_on_that_cannot_be_read_are_said_not_fatal() {
    let d = Daemon::setup();
    let validate = |fixed: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["daemon", "--validate", "--config"])
            .arg(d.path("paddock.toml"))
            .env("PADDOCK_FIXED_SETTINGS", fixed)
            .output()
            .unwrap()
    };
    let out = validate("{\"state_dir\": ");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("PADDOCK_FIXED_SETTINGS") && err.contains("cannot be compared"), "{err}");
    let moved = serde_json::json!({
        "state_dir": "/elsewhere", "run_dir": d.path("run"), "cgroup_root": "/sys/fs/cgroup",
        "remap": toml::from_str::<paddock::config::Remap>(&format!(
            "subuid = {:?}\nsubgid = {:?}\npasswd = {:?}\ngroup = {:?}\n",
            d.path("subuid"), d.path("subgid"), d.path("passwd"), d.path("group")
        )).unwrap(),
        "subnet": "10.77.0.0/16",
    });
    let out = validate(&moved.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!("state_dir is {} here, /elsewhere in the running daemon", d.path("state").display())),
        "{err}"
    );
    assert!(!err.contains("[remap]") && !err.contains("subnet"), "only what differs: {err}");
}
