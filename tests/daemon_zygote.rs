//! The daemon's zygote (src/sandbox/zygote.rs): a process forked at the
//! daemon's start that clones each sandbox and runs its init in place, so
//! a start costs no exec of paddock. What must hold: the init is still the
//! daemon's child and named as an init, nothing shows as a second daemon,
//! a dead zygote only costs speed, and an upgrade leaves no zombie.

mod common;

use common::daemon::{Daemon, SLEEPER, processes};

fn read(path: String) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn cmdline(pid: i64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

fn field(pid: i64, name: &str) -> String {
    read(format!("/proc/{pid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

/// The host uid that owns the user namespace of `pid` (NS_GET_OWNER_UID),
/// and the host uid its root is (the first line of its uid_map).
fn userns_owner_and_root(pid: i64) -> (u32, u32) {
    use std::os::fd::AsRawFd;
    const NS_GET_OWNER_UID: libc::Ioctl = 0xb704;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
    let mut owner: libc::uid_t = u32::MAX;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t into `owner`.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut owner) };
    assert_eq!(rc, 0, "NS_GET_OWNER_UID: {}", std::io::Error::last_os_error());
    let map = read(format!("/proc/{pid}/uid_map"));
    let root = map.split_whitespace().nth(1).and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("{map}"));
    (owner, root)
}

/// The daemon's children named `comm`, with their states.
fn children(daemon: u32, comm: &str) -> Vec<(i64, String)> {
    read(format!("/proc/{daemon}/task/{daemon}/children"))
        .split_whitespace()
        .filter_map(|p| p.parse::<i64>().ok())
        .filter(|p| read(format!("/proc/{p}/comm")).trim_end() == comm)
        .map(|p| (p, field(p, "State")))
        .collect()
}

#[test]
fn the_zygote_clones_inits_that_are_the_daemons_children_and_its_death_only_costs_speed() {
    let mut d = Daemon::setup().start(&[]);
    let daemon = d.child.as_ref().unwrap().id();
    // It names itself just after its fork, with no word to the daemon.
    d.wait_for("the zygote named", |_| {
        children(daemon, "paddock-zygote").first().is_some_and(|(pid, _)| cmdline(*pid) == ["paddock-zygote"])
    });
    let zygotes = children(daemon, "paddock-zygote");
    assert_eq!(zygotes.len(), 1, "one zygote, the daemon's child: {zygotes:?}");
    let zygote = zygotes[0].0;
    assert_eq!(cmdline(zygote), ["paddock-zygote"]);

    d.write("cloned.toml", SLEEPER);
    let init = d.running_pid("cloned");
    // Cloned by the zygote with CLONE_PARENT: the daemon's child, which it reaps.
    assert_eq!(field(init, "PPid"), daemon.to_string());
    assert_eq!(read(format!("/proc/{init}/comm")).trim_end(), "paddock-init");
    // Not executed (an executed init's command line is `paddock-init __init FD`).
    assert_eq!(cmdline(init), ["paddock-init"]);
    // Its user namespace is its root's, not the host root's: what it holds
    // of the kernel's per-user counts (inotify instances: 128 by default)
    // is counted against its slice's first uid, not against the root of
    // systemd and every host service.
    let (owner, root) = userns_owner_and_root(init);
    assert_eq!(owner, root, "the user namespace's owner");
    // Nothing else shows as the daemon, so `pkill -f 'paddock daemon'` finds only it.
    let argv: Vec<String> = cmdline(i64::from(daemon));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    assert_eq!(processes(&argv), [i64::from(daemon)]);

    // A stray SIGABRT (musl's abort in an init cloned into the host's pid
    // namespace signals the zygote's thread id) leaves the zygote be.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(zygote as i32), nix::sys::signal::Signal::SIGABRT).unwrap();
    d.write("after-abort.toml", SLEEPER);
    let after_abort = d.running_pid("after-abort");
    assert_eq!(cmdline(after_abort), ["paddock-init"], "cloned by the same zygote");
    assert_eq!(children(daemon, "paddock-zygote").first().map(|z| z.0), Some(zygote), "the zygote outlived SIGABRT");

    // A zygote that dies: the next start executes its init, and works.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(zygote as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    d.write("executed.toml", SLEEPER);
    let executed = d.running_pid("executed");
    assert_eq!(field(executed, "PPid"), daemon.to_string());
    assert_eq!(cmdline(executed)[..2], ["paddock-init", "__init"]);
    let (owner, root) = userns_owner_and_root(executed);
    assert_eq!(owner, root, "the executed init's user namespace's owner");
    let log = read(d.path("out/daemon.log").display().to_string());
    assert!(log.contains("the zygote is gone"), "{log}");
    // The one cloned before still runs, and both stop on SIGTERM.
    assert_eq!(d.running_pid("cloned"), init);
    assert_eq!(d.terminate(), 0);
}

#[test]
fn an_upgrade_reaps_the_old_zygote_and_forks_a_new_one() {
    let d = Daemon::setup().start(&[]);
    let daemon = d.child.as_ref().unwrap().id();
    d.write("kept.toml", SLEEPER);
    let init = d.running_pid("kept");
    let before = children(daemon, "paddock-zygote");
    assert_eq!(before.len(), 1);
    let out = d.paddock(&["upgrade"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = children(daemon, "paddock-zygote");
    assert_eq!(after.len(), 1, "the old zygote reaped, a new one forked: {after:?}");
    assert_ne!(after[0].0, before[0].0);
    assert!(!after[0].1.starts_with('Z'), "{after:?}");
    assert_eq!(d.running_pid("kept"), init, "the upgrade kept the workload");
    // The new zygote clones.
    d.write("after.toml", SLEEPER);
    assert_eq!(cmdline(d.running_pid("after")), ["paddock-init"]);
}

#[test]
fn an_init_holds_nothing_of_the_daemons_environment() {
    let d = Daemon::setup().start(&[("PADDOCK_TEST_SECRET", "hunter2-not-for-sandboxes")]);
    d.write("clean.toml", SLEEPER);
    let init = d.running_pid("clean");
    let environ = std::fs::read(format!("/proc/{init}/environ")).unwrap();
    assert!(environ.iter().all(|b| *b == 0), "{}", String::from_utf8_lossy(&environ));
    let daemon = d.child.as_ref().unwrap().id();
    let zygote = children(daemon, "paddock-zygote")[0].0;
    let environ = std::fs::read(format!("/proc/{zygote}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("hunter2"), "the zygote's environment is wiped");
}

#[test]
fn a_configuration_too_large_for_one_packet_still_starts_a_supervised_init() {
    // Over the channel's 32 KiB packet, the configuration travels in a
    // memfd, which takes a descriptor before the daemon's end.
    let d = Daemon::setup().start(&[]);
    let big = "x".repeat(40 << 10);
    d.write("large.toml", &format!("{}env = {{ BIG = \"{big}\" }}\n", SLEEPER));
    let init = d.running_pid("large");
    assert_eq!(d.workload("large").unwrap()["restarts"], 0);
    // The daemon's end is where a successor finds it.
    let end = std::fs::read_link(format!("/proc/{init}/fd/4")).unwrap();
    assert!(end.display().to_string().starts_with("socket:"), "{}", end.display());
}
