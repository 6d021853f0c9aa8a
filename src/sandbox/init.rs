//! PID 1 of the sandbox: `paddock __init FD`, exec'd by the clone child,
//! so it is a fresh single-threaded process that may allocate freely. It
//! builds the root, forks the workload, then keeps it (`keeper.rs`) until
//! it exits, and exits with its status.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{ForkResult, fork, setsid};

use super::channel::Channel;
use super::config::{DAEMON_END_FD, INIT_END_FD, InitConfig, InitReport};
use super::keeper::{Keeper, Output, signalfd};
use super::{exec, rootfs, seccomp};

/// Signals the init passes on to the workload: every one a manifest's
/// `stop.signal` may name (the kernel gives a pid namespace's init only
/// the signals it handles: one not passed on would be lost). Not SIGKILL
/// and SIGSTOP, which cannot be caught, nor SIGCHLD, the init's own. One
/// the kernel raises in the init for what the init itself does (a write
/// to a closed pipe, say) is not passed on (`Keeper::signal`); a fault
/// kills the init whatever its mask.
pub(super) const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGABRT,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGUSR1,
    Signal::SIGSEGV,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGSTKFLT,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGURG,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGWINCH,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSYS,
];

/// `FORWARDED`, as a set.
pub(super) fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    FORWARDED.iter().for_each(|s| set.add(*s));
    set
}

/// Signals `paddock __enter` passes on to an entered command: those
/// `paddock exec` relays from its caller.
pub(super) const RELAYED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Moves a descriptor to a fixed number (the two ends of a supervised
/// init's channel are where a successor daemon expects them).
fn move_to(fd: OwnedFd, to: RawFd) -> Result<OwnedFd, Errno> {
    if fd.as_raw_fd() == to {
        return Ok(fd);
    }
    // SAFETY: dup3 onto a number this process does not use (after the exec
    // only 0-2 and the channel are open); the new descriptor is ours.
    let moved = Errno::result(unsafe { libc::dup3(fd.as_raw_fd(), to, libc::O_CLOEXEC) })?;
    // SAFETY: dup3 returned `to`, open and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Entry point; returns the process's exit status.
pub fn main(channel_fd: RawFd) -> i32 {
    // Not dumpable: nothing in the sandbox may trace this process or open
    // its memory, unless it holds CAP_SYS_PTRACE where this process's
    // memory was made (the host's, when cloned from it; the sandbox's
    // user namespace, when paddock was executed in it: see `confine_init`).
    // The workload's execve makes it dumpable again.
    // SAFETY: prctl with integer arguments only.
    if let Err(e) = Errno::result(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }) {
        eprintln!("paddock init: PR_SET_DUMPABLE: {e}");
        return 125;
    }
    // SAFETY: paddock passed this descriptor to us across exec for exactly this use; nothing else owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(channel_fd) };
    // Where a successor daemon expects it (after the exec only 0-2 and the
    // channel are open, so INIT_END_FD is free or is the channel already).
    let channel = match move_to(channel, INIT_END_FD) {
        Ok(fd) => Channel::new(fd),
        Err(e) => {
            eprintln!("paddock init: placing the channel: {e}");
            return 125;
        }
    };
    let (cfg, mut fds) = match channel.recv::<InitConfig>() {
        Ok(message) => message,
        Err(e) => {
            eprintln!("paddock init: {e}");
            return 125;
        }
    };
    let expected = cfg.mounts.len() + 1 + usize::from(cfg.supervised);
    if fds.len() != expected {
        let error = format!("expected {expected} descriptors, got {}", fds.len());
        let _ = channel.report(InitReport::SetupFailed { step: "receive mounts".to_owned(), error });
        return 125;
    }
    // Supervised: the daemon's end came first; it is kept, never read, at
    // DAEMON_END_FD, for a successor daemon to adopt this sandbox through.
    // The kernel gave it the lowest free number, or the next when a large
    // configuration came in a memfd (closed by now, so that number is free).
    let _daemon_end = if cfg.supervised {
        match move_to(fds.remove(0), DAEMON_END_FD) {
            Ok(daemon_end) => Some(daemon_end),
            Err(e) => {
                let error = format!("placing the daemon's end at descriptor {DAEMON_END_FD}: {e}");
                let _ = channel.report(InitReport::SetupFailed { step: "receive the channel".to_owned(), error });
                return 125;
            }
        }
    } else {
        None
    };
    let fail = |step: &str, error: String| {
        let _ = channel.report(InitReport::SetupFailed { step: step.to_owned(), error });
        125
    };
    // The workload's open-files limit, with room for this init's own few
    // descriptors. A remapped init was born with room enough and lowers it
    // here: it has not the daemon's ids, and setting them from outside
    // would take CAP_SYS_RESOURCE (`spawn::nofile_at_birth`).
    if let Some((soft, hard)) = cfg.nofile {
        let limit = libc::rlimit {
            rlim_cur: soft.max(super::spawn::INIT_NOFILE),
            rlim_max: hard.max(super::spawn::INIT_NOFILE),
        };
        // SAFETY: a valid rlimit.
        if let Err(e) = Errno::result(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }) {
            return fail("set RLIMIT_NOFILE", e.desc().to_owned());
        }
    }
    // Our cgroup was set before we were released, so the namespace is rooted at it.
    if let Err(e) = unshare(CloneFlags::CLONE_NEWCGROUP) {
        return fail("unshare cgroup namespace", e.to_string());
    }
    if !cfg.private_pid {
        // Without our own pid namespace we are not PID 1: become the reaper of orphans anyway.
        // SAFETY: prctl with integer arguments only.
        if let Err(e) = Errno::result(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }) {
            return fail("become subreaper", e.to_string());
        }
    }
    let mut fds = fds.into_iter();
    let rootfs_fd = fds.next().expect("length checked above");
    if let Err(e) = rootfs::build(&cfg, rootfs_fd, fds.collect()) {
        let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
        return fail(e.step, format!("{}: {}{hint}", e.target, e.reason()));
    }
    let programs = if cfg.seccomp {
        match seccomp::default_programs(cfg.capabilities) {
            Ok(p) => p,
            Err(e) => return fail("seccomp", e.to_string()),
        }
    } else {
        // No filter keeps it from keyrings: a session keyring of its own.
        if let Err(e) = exec::join_own_session_keyring() {
            let hint = match e {
                Errno::EDQUOT => " (each unconfined workload's root holds one: raise the sysctl kernel.keys.maxkeys)",
                _ => "",
            };
            return fail(exec::Step::Keyring.name(), format!("{}{hint}", e.desc()));
        }
        Vec::new()
    };
    let mut prepared = match exec::prepare(&cfg, programs) {
        Ok(p) => p,
        Err((command, errno)) => {
            let _ = channel.report(InitReport::ExecFailed { command, errno: errno as i32 });
            return if errno == Errno::ENOENT { 127 } else { 126 };
        }
    };
    // The workload's filter and bounding set, for this init as well: what
    // it does from here on, the filter allows.
    if let Err((step, errno)) = prepared.apply_before_fork() {
        return fail(step.name(), errno.desc().to_owned());
    }
    let mut watched = forwarded();
    watched.add(Signal::SIGCHLD);
    // Blocked, not handled: a blocked signal is never discarded, even for a
    // PID 1, and the keeper reads it from a signalfd.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&watched), None) {
        return fail("block signals", e.to_string());
    }
    let (err_read, err_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail("pipe", e.to_string()),
    };
    let (go_read, go_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail("pipe", e.to_string()),
    };
    prepared.go = Some(go_read.as_raw_fd());
    // Supervised: the workload writes into a pipe this init reads, stamps
    // and copies into the log (its own stdout).
    let output = if cfg.supervised {
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => Some(p),
            Err(e) => return fail("pipe", e.to_string()),
        }
    } else {
        None
    };
    let signals = match signalfd(&watched) {
        Ok(s) => s,
        Err(e) => return fail("signalfd", e.to_string()),
    };
    // The daemon records the sandbox while this init builds it; nothing of
    // the workload's runs before it has (its second byte: `spawn::release`).
    let mut recorded = 0u8;
    match nix::unistd::read(channel.fd(), std::slice::from_mut(&mut recorded)) {
        Ok(1) => {}
        Ok(_) => return fail("wait for the record", "the daemon closed the channel".to_owned()),
        Err(e) => return fail("wait for the record", e.to_string()),
    }
    // Recorded: from here a supervised sandbox outlives a daemon that dies
    // (a successor adopts it by its record). Tied to the daemon until its
    // workload had run, it could be killed with it after the workload's
    // exec, and the workload run again by the successor (helper-123).
    if cfg.supervised {
        // SAFETY: prctl with integer arguments only.
        if let Err(e) = Errno::result(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) }) {
            return fail("drop the parent-death signal", e.desc().to_owned());
        }
    }
    // SAFETY: the init is one thread (exec'd, or cloned from a one-threaded process, no runtime), so the child may run any code.
    let workload = match unsafe { fork() } {
        Err(e) => return fail("fork", e.to_string()),
        Ok(ForkResult::Child) => {
            drop(err_read);
            drop(go_write);
            if let Some((_, write)) = &output {
                // SAFETY: dup2 onto this process's stdout and stderr; `write` is open.
                unsafe {
                    libc::dup2(write.as_raw_fd(), 1);
                    libc::dup2(write.as_raw_fd(), 2);
                }
            }
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            // Its own session: a terminal's Ctrl-C reaches paddock, which forwards it once.
            let _ = setsid();
            exec::report_failure(&err_write, exec::exec(&prepared))
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(err_write);
    // Nothing privileged is left to do here: from now on this process is
    // no more privileged than the workload it keeps.
    drop(go_read);
    if let Err((step, errno)) = prepared.confine_init() {
        let _ = nix::sys::signal::kill(workload, Signal::SIGKILL);
        return fail("confine the init", format!("{}: {}", step.name(), errno.desc()));
    }
    // Now the workload may exec (a child that failed before it is gone: EPIPE).
    let _ = nix::unistd::write(&go_write, &[1u8]);
    drop(go_write);
    let output = output.map(|(read, write)| {
        drop(write);
        Output::new(read)
    });
    let failed = exec::read_failure(&err_read).map(|(step, errno)| (step, errno as i32));
    drop(err_read);
    let report = match failed {
        None => InitReport::Started { pid: workload.as_raw() },
        Some((exec::Step::Execve, errno)) => InitReport::ExecFailed { command: cfg.command[0].clone(), errno },
        Some((step, errno)) => {
            InitReport::SetupFailed { step: step.name().to_owned(), error: Errno::from_raw(errno).desc().to_owned() }
        }
    };
    let _ = channel.report(report);
    match failed {
        Some((exec::Step::Execve, libc::ENOENT)) => return 127,
        Some((exec::Step::Execve, _)) => return 126,
        Some(_) => return 125,
        None => {}
    }
    let keeper = Keeper {
        channel,
        workload,
        signals,
        forwarded: FORWARDED,
        output,
        supervised: cfg.supervised,
        private_pid: cfg.private_pid,
    };
    match keeper.keep() {
        InitReport::Exited { signal: Some(sig), .. } => 128 + sig,
        InitReport::Exited { code: Some(code), .. } => code,
        _ => 125,
    }
}
