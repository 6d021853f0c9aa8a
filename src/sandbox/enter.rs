//! Entering a running sandbox (`paddock exec`, health-check commands):
//! `paddock __enter FD`, started by the daemon, joins the init's cgroup
//! and namespaces, forks, and the child becomes a process of the workload
//! exactly as the init's child did (`exec.rs`: its user, capabilities,
//! bounding set, seccomp filter, no_new_privs, rlimit, environment).
//! The parent stays outside the sandbox's pid namespace, passes signals
//! on, and exits as the child did (128 + signal when killed).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::config::InitConfig;
use super::{exec, seccomp};

/// What the entering process is told, with the init's pidfd alongside.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnterConfig {
    /// The init's host pid (its namespaces are compared with ours by it).
    pub pid: i32,
    /// The workload as the init's child became it, with the command,
    /// user, environment and workdir of this entry.
    pub workload: InitConfig,
    /// The cgroup directories of the sandbox, joined first.
    pub cgroup: Vec<PathBuf>,
    /// Its stdin is a terminal: the command gets it as its controlling one.
    pub tty: bool,
    /// A probe's timeout: once it has passed, the command's process group
    /// (what it started that did not leave it) is killed, not the command
    /// alone, whose children would live on in the workload.
    #[serde(default)]
    pub time_limit: Option<std::time::Duration>,
}

/// What to run in the sandbox, beside what the manifest says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub command: Vec<String>,
    /// Instead of the manifest's user and group.
    pub user: Option<u32>,
    pub group: Option<u32>,
    /// Added to (or replacing) the manifest's environment.
    pub env: Vec<(String, String)>,
    pub workdir: Option<PathBuf>,
}

/// The workload `name` as its manifest makes it, running `entry`.
pub fn workload(name: &crate::model::WorkloadName, m: &crate::model::Manifest, entry: &Entry) -> InitConfig {
    let mut env: Vec<(String, String)> = m.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in &entry.env {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    // An entered command joins the sandbox's mounts; it makes none.
    InitConfig {
        command: entry.command.clone(),
        env,
        workdir: entry.workdir.clone().unwrap_or_else(|| m.workdir.clone()),
        user: entry.user.unwrap_or(m.user),
        group: entry.group.unwrap_or(m.group),
        ..super::spawn::from_manifest(name, m)
    }
}

/// Exit statuses, as `paddock run` has them.
const SETUP_FAILED: i32 = 125;
const CANNOT_EXECUTE: i32 = 126;
const NOT_FOUND: i32 = 127;

/// A process entered into a sandbox (`paddock __enter`), and the daemon's
/// end of its channel, held for as long as the process runs: once that
/// end closes (the daemon died, or re-executed itself for an upgrade and
/// so cannot wait for it), `__enter` hangs its command up and ends, and
/// the command ends with it. Derefs to the process. Counted among this
/// process's unreaped children (`super::unreaped`) until dropped.
#[derive(Debug)]
pub struct Entered {
    child: std::process::Child,
    _tie: Channel,
    _counted: Option<super::unreaped::Counted>,
}

impl std::ops::Deref for Entered {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.child
    }
}

impl std::ops::DerefMut for Entered {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.child
    }
}

/// How long an entered command has, once the daemon that started it is
/// gone (SIGHUP sent), before `__enter` ends and the command is killed with it.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts `paddock __enter` with `stdio` as its stdin, stdout and stderr
/// and nothing else of the daemon's (no environment, no other descriptor).
pub fn start(config: &EnterConfig, init: &OwnedFd, stdio: [OwnedFd; 3]) -> std::io::Result<Entered> {
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?;
    let [stdin, stdout, stderr] = stdio;
    let channel_fd = theirs.as_raw_fd();
    let mut command = std::process::Command::new("/proc/self/exe");
    command.arg("__enter").arg("3").env_clear().stdin(stdin).stdout(stdout).stderr(stderr);
    // SAFETY: runs in the forked child before exec and calls only dup2,
    // which is async-signal-safe; `channel_fd` stays open in the parent
    // until spawn returns.
    unsafe {
        command.pre_exec(move || {
            // Not the daemon's blocked stop signals (`__enter` sets its own
            // mask once it runs; this is for the moment before).
            super::sys::unblock_daemon_signals();
            // dup2 clears O_CLOEXEC on the copy, so only this one crosses the exec.
            if libc::dup2(channel_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    let channel = Channel::new(ours);
    if let Err(e) = channel.send(config, &[init.as_raw_fd()]) {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other(e.to_string()));
    }
    let counted = super::unreaped::count(child.id());
    Ok(Entered { child, _tie: channel, _counted: counted })
}

/// The namespaces of `pid` that differ from ours (joining one's own user
/// namespace is an error; the others would be no-ops).
fn differing(pid: i32) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    for (ns, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ] {
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{ns}")).map(|m| m.ino());
        let ours = std::fs::metadata(format!("/proc/self/ns/{ns}")).map(|m| m.ino());
        if theirs.is_err() || theirs.ok() != ours.ok() {
            flags |= flag;
        }
    }
    flags
}

/// Where `pid`'s cgroups (/proc/PID/cgroup, one line per hierarchy)
/// differ from ours, said for the error; None where they agree.
fn cgroups_apart(pid: i32) -> Option<String> {
    let theirs = match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some("the workload stopped meanwhile (`paddock status`)".to_owned());
        }
        Err(e) => return Some(format!("reading /proc/{pid}/cgroup: {e}")),
    };
    let ours = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(text) => text,
        Err(e) => return Some(format!("reading /proc/self/cgroup: {e}")),
    };
    differing_lines(&theirs, &ours).map(|(theirs, ours)| {
        format!(
            "the workload runs in cgroup {theirs:?} and this command would run in {ours:?}, outside its limits; \
             `paddock restart NAME` starts it again where this daemon puts it"
        )
    })
}

/// The first hierarchy in which `theirs` or `ours` (/proc/PID/cgroup's
/// text) is in a cgroup paddock made (a daemon's group, `paddock` or
/// `paddock-HASH`, or `paddock-run` on its path) and the other is not in
/// the same one. The hierarchies paddock makes none in (systemd's, devices, freezer; all of
/// them for a v1 workload without limits) are both the daemon's, where
/// they may differ harmlessly (a sandbox adopted from a daemon run
/// elsewhere) and hold no limit of the workload's.
fn differing_lines(theirs: &str, ours: &str) -> Option<(String, String)> {
    let split = |line: &str| line.rsplit_once(':').map(|(hierarchy, path)| (hierarchy.to_owned(), path.to_owned()));
    let ours: Vec<(String, String)> = ours.lines().filter_map(split).collect();
    let made = |path: &str| {
        path.split('/').any(|c| c == "paddock-run" || super::cgroup::is_workloads_group(std::ffi::OsStr::new(c)))
    };
    for (hierarchy, path) in theirs.lines().filter_map(split) {
        let mine = ours.iter().find(|(h, _)| *h == hierarchy).map(|(_, p)| p.as_str());
        if mine != Some(path.as_str()) && (made(&path) || mine.is_some_and(made)) {
            return Some((format!("{hierarchy}:{path}"), mine.map(|p| format!("{hierarchy}:{p}")).unwrap_or_default()));
        }
    }
    None
}

fn fail(what: &str, error: impl std::fmt::Display) -> i32 {
    eprintln!("paddock exec: {what}: {error}");
    SETUP_FAILED
}

/// Entry point of `paddock __enter FD`; returns the exit status.
pub fn main(channel_fd: RawFd) -> i32 {
    // Not dumpable: the sandbox's processes cannot ptrace this process,
    // which holds the host's uid 0 and paddock's binary, nor open its
    // /proc files (as runc's setns process does).
    // SAFETY: prctl with integer arguments only.
    if let Err(e) = Errno::result(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }) {
        return fail("PR_SET_DUMPABLE", e);
    }
    // Only stdin, stdout, stderr and the channel stay open. A descriptor
    // the daemon inherited without O_CLOEXEC (from whatever started it)
    // came through its exec of this process, and close-on-exec alone
    // (`exec::setup`) would leave it open in the command until its execve:
    // through its chdir to the workdir and the lookup of its program, where
    // a link the workload made to /proc/self/fd/N (its workdir replaced by
    // one) would lead onto the host's directory (runc's CVE-2024-21626).
    if let Err(e) = super::sys::close_all_but(&[channel_fd]) {
        return fail("closing inherited descriptors", e);
    }
    // SAFETY: the daemon passed this descriptor across exec for exactly this use.
    let channel = Channel::new(unsafe { OwnedFd::from_raw_fd(channel_fd) });
    let (cfg, fds) = match channel.recv::<EnterConfig>() {
        Ok(message) => message,
        Err(e) => return fail("receiving the sandbox", e),
    };
    // Kept, to hear the daemon go (SIGIO when its end closes), and not
    // passed on to the command. SIGIO is blocked first: its default
    // action would end this process before it could say why.
    let mut io = SigSet::empty();
    io.add(Signal::SIGIO);
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&io), None).and_then(|()| watch_hangup(channel.fd())) {
        return fail("watching the daemon's channel", e);
    }
    let Some(init) = fds.into_iter().next() else { return fail("receiving the sandbox", "no pidfd") };
    for dir in &cfg.cgroup {
        if let Err(e) = std::fs::write(dir.join("cgroup.procs"), "0") {
            return fail(&format!("joining cgroup {}", dir.display()), e);
        }
    }
    // Fail closed: where the init is in a cgroup this entry did not join
    // (one the daemon does not know of), the command would run outside
    // the workload's limits. Read by pid; the setns below, through the
    // pidfd, fails if the init is gone, so the pid was the init's.
    if let Some(apart) = cgroups_apart(cfg.pid) {
        return fail("joining the sandbox's cgroups", apart);
    }
    let joined = differing(cfg.pid);
    if let Err(e) = setns(&init, joined) {
        return match e {
            // Through the init's pidfd: the init has exited since.
            Errno::ESRCH => {
                fail("joining the sandbox's namespaces", "the workload stopped meanwhile (`paddock status`)")
            }
            e => fail("joining the sandbox's namespaces", e),
        };
    }
    drop(init);
    let programs = if cfg.workload.seccomp {
        match seccomp::default_programs(cfg.workload.capabilities) {
            Ok(p) => p,
            Err(e) => return fail("seccomp", e),
        }
    } else {
        Vec::new()
    };
    // After the mount namespace is joined: PATH is searched in the sandbox's root.
    let mut prepared = match exec::prepare(&cfg.workload, programs) {
        Ok(p) => p,
        Err((command, errno)) => {
            eprintln!("paddock exec: cannot execute {command}: {}", errno.desc());
            return if errno == Errno::ENOENT { NOT_FOUND } else { CANNOT_EXECUTE };
        }
    };
    // This process as its child sees it: none, from the sandbox's pid
    // namespace (which this process is not in).
    prepared.die_with_parent =
        Some(if joined.contains(CloneFlags::CLONE_NEWPID) { 0 } else { nix::unistd::getpid().as_raw() });
    let mut watched = SigSet::empty();
    watched.add(Signal::SIGCHLD);
    watched.add(Signal::SIGIO);
    super::init::RELAYED.iter().for_each(|s| watched.add(*s));
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&watched), None) {
        return fail("blocking signals", e);
    }
    let (err_read, err_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail("pipe", e),
    };
    // SAFETY: a single-threaded process (freshly exec'd), so the child may run any code.
    let child = match unsafe { fork() } {
        Err(e) => return fail("fork", e),
        Ok(ForkResult::Child) => {
            drop(err_read);
            // In a user namespace of its own, first become its root: this
            // process is host uid 0 until then, and nothing it does as the
            // workload may be done as that (not even the workdir's chdir).
            if joined.contains(CloneFlags::CLONE_NEWUSER) {
                let root = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
                // The id change resets dumpability to fs.suid_dumpable's:
                // not dumpable again, before anything else.
                if nix::unistd::setgroups(&[]).is_err()
                    || nix::unistd::setresgid(root.0, root.0, root.0).is_err()
                    || nix::unistd::setresuid(root.1, root.1, root.1).is_err()
                    // SAFETY: prctl with integer arguments only.
                    || unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0
                {
                    // SAFETY: _exit ends the process without running atexit handlers.
                    unsafe { libc::_exit(SETUP_FAILED) }
                }
            }
            // No filter keeps it from keyrings: not the daemon's session keyring.
            if !cfg.workload.seccomp
                && let Err(e) = exec::join_own_session_keyring()
            {
                exec::report_failure(&err_write, (exec::Step::Keyring, e))
            }
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            // A session of its own; with a terminal, the terminal is its
            // controlling one, so Ctrl-C and job control work inside.
            let _ = setsid();
            if cfg.tty {
                // SAFETY: ioctl on stdin with an integer argument.
                unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
            }
            exec::report_failure(&err_write, exec::exec(&prepared))
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(err_write);
    if let Some((step, errno)) = exec::read_failure(&err_read) {
        let _ = waitpid(child, None);
        return match step {
            exec::Step::Execve => {
                eprintln!("paddock exec: cannot execute {}: {}", cfg.workload.command[0], errno.desc());
                if errno == Errno::ENOENT { NOT_FOUND } else { CANNOT_EXECUTE }
            }
            step => fail(step.name(), errno.desc()),
        };
    }
    let deadline = cfg.time_limit.map(|limit| std::time::Instant::now() + limit);
    wait_forwarding(child, &watched, &channel, deadline)
}

/// Has SIGIO sent to this process when the daemon's end of `channel`
/// closes (or anything arrives on it), and keeps the descriptor from the
/// command.
fn watch_hangup(channel: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    fcntl(channel, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    // SAFETY: F_SETOWN with this process's pid: an integer argument.
    Errno::result(unsafe { libc::fcntl(channel.as_raw_fd(), libc::F_SETOWN, libc::getpid()) })?;
    let flags = OFlag::from_bits_truncate(fcntl(channel, FcntlArg::F_GETFL)?);
    fcntl(channel, FcntlArg::F_SETFL(flags | OFlag::O_ASYNC | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Whether the daemon's end of the channel is closed.
fn hung_up(channel: &Channel) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(channel.fd()), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO)
        .is_ok_and(|n| n > 0 && fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)))
}

/// Passes signals on to the command until it ends; its exit status. Once
/// the daemon is gone, the command's session is hung up (SIGHUP, as a
/// closed terminal would), and after `ORPHAN_GRACE` this process ends,
/// taking the command with it (its parent-death signal).
fn wait_forwarding(child: Pid, watched: &SigSet, channel: &Channel, mut deadline: Option<std::time::Instant>) -> i32 {
    let mut orphaned: Option<std::time::Instant> = None;
    // A probe's: what the command left in its group goes with it, however
    // it ends (one left holding the output would keep the probe waiting,
    // and live on in the workload). Killed before the command is reaped:
    // until then its pid, the group's id, can be no other's (helper-106).
    let probe = deadline.is_some();
    let ended = |code: i32| {
        if probe {
            let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
        }
        let _ = waitpid(child, None);
        code
    };
    loop {
        // Its end seen, not reaped (`ended` reaps it).
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match nix::sys::wait::waitid(nix::sys::wait::Id::Pid(child), flags) {
            Ok(WaitStatus::Exited(_, code)) => return ended(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return ended(128 + signal as i32),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return fail("waiting for the command", e),
        }
        // A hang-up before the watch was armed raised no signal: looked at each turn.
        if orphaned.is_none() && hung_up(channel) {
            // Its session: it called setsid, so its process group is its pid.
            let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGHUP);
            orphaned = Some(std::time::Instant::now() + ORPHAN_GRACE);
        }
        let left = orphaned.map(|deadline| deadline.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            eprintln!("paddock exec: the daemon is gone; the command is killed");
            return 128 + libc::SIGKILL;
        }
        let limit = deadline.map(|deadline| deadline.saturating_duration_since(std::time::Instant::now()));
        if limit.is_some_and(|l| l.is_zero()) {
            // Its group, then (before its setsid, it has none yet) the command.
            if kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL) == Err(Errno::ESRCH) {
                let _ = kill(child, Signal::SIGKILL);
            }
            deadline = None;
            continue;
        }
        let wait = [left, limit].into_iter().flatten().min();
        match wait_signal(watched, wait.unwrap_or(std::time::Duration::from_secs(3600))) {
            Some(Signal::SIGCHLD | Signal::SIGIO) | None => {}
            // A hang-up (the client gone, or sent on by it) reaches the
            // command's process group, as a closed terminal's would: what
            // the command started in the background too.
            Some(Signal::SIGHUP) => {
                // Before the command's setsid its group is not there yet:
                // the command alone, then.
                if kill(Pid::from_raw(-child.as_raw()), Signal::SIGHUP) == Err(Errno::ESRCH) {
                    let _ = kill(child, Signal::SIGHUP);
                }
            }
            Some(signal) => {
                let _ = kill(child, signal);
            }
        }
    }
}

/// The next of the blocked signals `watched`, or None after `timeout`.
fn wait_signal(watched: &SigSet, timeout: std::time::Duration) -> Option<Signal> {
    let limit =
        libc::timespec { tv_sec: timeout.as_secs().min(i32::MAX as u64) as _, tv_nsec: timeout.subsec_nanos().into() };
    // SAFETY: a valid signal set and timespec; no siginfo is asked for.
    let signal = unsafe { libc::sigtimedwait(watched.as_ref(), std::ptr::null_mut(), &limit) };
    Signal::try_from(signal).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_hierarchy_whose_cgroups_differ_is_named() {
        let ours =
            "12:pids:/paddock/w\n11:memory:/paddock/w\n1:name=systemd:/system.slice/paddock.service\n0::/user.slice\n";
        assert_eq!(differing_lines(ours, ours), None);
        let theirs =
            "12:pids:/paddock/w\n11:memory:/elsewhere\n1:name=systemd:/system.slice/paddock.service\n0::/user.slice\n";
        assert_eq!(
            differing_lines(theirs, ours),
            Some(("11:memory:/elsewhere".to_owned(), "11:memory:/paddock/w".to_owned())),
            "we joined a cgroup of paddock's that the init is not in"
        );
        // The init in a cgroup of paddock's that was not joined (none recorded).
        let daemons = "11:memory:/system.slice/paddock.service\n0::/\n";
        let theirs = "11:memory:/system.slice/paddock.service/paddock/w\n0::/\n";
        assert!(differing_lines(theirs, daemons).is_some());
        // Hierarchies paddock makes nothing in may differ: both the daemon's.
        let moved = "12:pids:/paddock/w\n11:memory:/paddock/w\n1:name=systemd:/user.slice/session-1.scope\n0::/other\n";
        assert_eq!(differing_lines(moved, ours), None);
        let v1_no_limits = "11:memory:/user.slice\n0::/user.slice\n";
        assert_eq!(differing_lines(v1_no_limits, "11:memory:/system.slice\n0::/system.slice\n"), None);
        // A delegated v2 unit: paddock's leaf, not the unit's supervisor.
        let unit = "0::/system.slice/paddock.service/paddock/w\n";
        assert_eq!(differing_lines(unit, unit), None);
        assert!(differing_lines(unit, "0::/system.slice/paddock.service/supervisor\n").is_some());
        // The group of a daemon with another state_dir is paddock's too.
        let hashed = "12:pids:/paddock-4aea49a07af865b2/w\n0::/\n";
        assert!(differing_lines(hashed, "12:pids:/\n0::/\n").is_some());
        assert!(differing_lines("12:pids:/\n0::/\n", hashed).is_some());
    }
}
