//! PID 1 of the sandbox: `paddock __init FD`, exec'd by the clone child,
//! so it is a fresh single-threaded process that may allocate freely. It
//! builds the root, forks the workload, then reaps zombies and forwards
//! signals until the workload exits, and exits with its status.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};

use super::channel::Channel;
use super::config::{InitConfig, InitReport};
use super::{exec, rootfs, seccomp};

/// Signals the init passes on to the workload.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Entry point; returns the process's exit status.
pub fn main(channel_fd: RawFd) -> i32 {
    // SAFETY: paddock passed this descriptor to us across exec for exactly this use; nothing else owns it.
    let channel = Channel::new(unsafe { OwnedFd::from_raw_fd(channel_fd) });
    let (cfg, fds) = match channel.recv::<InitConfig>() {
        Ok(message) => message,
        Err(e) => {
            eprintln!("paddock init: {e}");
            return 125;
        }
    };
    let fail = |step: &str, error: String| {
        let _ = channel.send(&InitReport::SetupFailed { step: step.to_owned(), error }, &[]);
        125
    };
    if fds.len() != cfg.mounts.len() + 1 {
        return fail("receive mounts", format!("expected {} descriptors, got {}", cfg.mounts.len() + 1, fds.len()));
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
        return fail(e.step, format!("{}: {}", e.target, e.errno.desc()));
    }
    let programs = if cfg.seccomp {
        match seccomp::default_programs(cfg.capabilities) {
            Ok(p) => p,
            Err(e) => return fail("seccomp", e.to_string()),
        }
    } else {
        Vec::new()
    };
    let prepared = match exec::prepare(&cfg, programs) {
        Ok(p) => p,
        Err((command, errno)) => {
            let _ = channel.send(&InitReport::ExecFailed { command, errno: errno as i32 }, &[]);
            return if errno == Errno::ENOENT { 127 } else { 126 };
        }
    };
    let mut watched = SigSet::empty();
    watched.add(Signal::SIGCHLD);
    FORWARDED.iter().for_each(|s| watched.add(*s));
    // Blocked, not handled: a blocked signal is never discarded, even for a
    // PID 1, and sigwait collects it below.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&watched), None) {
        return fail("block signals", e.to_string());
    }
    let (err_read, err_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail("pipe", e.to_string()),
    };
    // SAFETY: single-threaded process (freshly exec'd, no runtime), so the child may run any code.
    let workload = match unsafe { fork() } {
        Err(e) => return fail("fork", e.to_string()),
        Ok(ForkResult::Child) => {
            drop(err_read);
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            // Its own session: a terminal's Ctrl-C reaches paddock, which forwards it once.
            let _ = setsid();
            let (step, errno) = exec::exec(&prepared);
            let mut failed = [0u8; 8];
            failed[..4].copy_from_slice(&(step as u32).to_ne_bytes());
            failed[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
            let _ = nix::unistd::write(&err_write, &failed);
            // SAFETY: _exit ends the process without running the parent's atexit handlers.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(err_write);
    let mut buf = [0u8; 8];
    let n = nix::unistd::read(&err_read, &mut buf).unwrap_or(0);
    let failed = (n == 8).then(|| {
        let step = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes"));
        let errno = i32::from_ne_bytes(buf[4..].try_into().expect("4 bytes"));
        (exec::Step::from_u32(step).unwrap_or(exec::Step::Execve), errno)
    });
    let report = match failed {
        None => InitReport::Started { pid: workload.as_raw() },
        Some((exec::Step::Execve, errno)) => InitReport::ExecFailed { command: cfg.command[0].clone(), errno },
        Some((step, errno)) => {
            InitReport::SetupFailed { step: step.name().to_owned(), error: Errno::from_raw(errno).desc().to_owned() }
        }
    };
    let _ = channel.send(&report, &[]);
    let end = supervise(workload, &watched);
    match failed {
        Some((exec::Step::Execve, libc::ENOENT)) => return 127,
        Some((exec::Step::Execve, _)) => return 126,
        Some(_) => return 125,
        None => {}
    }
    // An exit status alone cannot tell `exit 143` from death by SIGTERM.
    let _ = channel.send(&end, &[]);
    match end {
        InitReport::Exited { signal: Some(sig), .. } => 128 + sig,
        InitReport::Exited { code: Some(code), .. } => code,
        _ => 125,
    }
}

/// Reaps every child, forwards signals to the workload, and returns how
/// the workload ended.
fn supervise(workload: Pid, watched: &SigSet) -> InitReport {
    loop {
        let Ok(signal) = watched.wait() else { continue };
        if signal != Signal::SIGCHLD {
            let _ = kill(workload, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == workload => {
                    return InitReport::Exited { code: Some(code), signal: None };
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == workload => {
                    return InitReport::Exited { code: None, signal: Some(sig as i32) };
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
