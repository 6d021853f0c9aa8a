//! A sandbox once its workload runs: waiting for its end, signalling it,
//! and taking over one that a daemon started before this one (adoption).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::cgroup::Cgroup;
use super::channel::{Channel, ChannelError};
use super::config::{DAEMON_END_FD, InitCommand, InitReport};
use super::sys;
use crate::model::Exit;

/// A running sandbox: its init's host pid, a pidfd, its cgroup, and the
/// channel on which the init reports how the workload ended.
#[derive(Debug)]
pub struct Sandbox {
    pub pid: Pid,
    /// A pidfd of the init (signals, and the end of an init that is not
    /// this process's child). The daemon's executor takes it from a
    /// sandbox it started, and signals the init through it.
    pub pidfd: Option<OwnedFd>,
    /// None when nothing needs one (see `needs_cgroup`).
    pub cgroup: Option<Cgroup>,
    pub(super) channel: Channel,
    /// Whether this process is the init's parent, and so reaps it (an
    /// adopted init is not, unless this process re-executed itself).
    pub(super) child: bool,
}

/// How an init's report, or its wait status, says the workload ended.
pub fn end_of(report: Option<&InitReport>, status: Option<WaitStatus>) -> Exit {
    match (report, status) {
        (Some(InitReport::Exited { signal: Some(sig), .. }), _) => Exit::Signal(*sig),
        (Some(InitReport::Exited { code: Some(code), .. }), _) => Exit::Code(*code),
        (_, Some(WaitStatus::Exited(_, code))) => Exit::Code(code),
        (_, Some(WaitStatus::Signaled(_, sig, _))) => Exit::Signal(sig as i32),
        // An init that died without a word (not our child): it blocks every
        // signal but SIGKILL, so that is what ended it.
        _ => Exit::Signal(libc::SIGKILL),
    }
}

impl Sandbox {
    /// The descriptor that turns readable when the init has something to
    /// say (or has exited): wait on it, then `try_recv`.
    pub fn channel_fd(&self) -> RawFd {
        self.channel.fd().as_raw_fd()
    }

    /// The init's next report (`Channel::try_recv_report`: in its packet,
    /// no descriptors), or `Err(Io(EAGAIN))` when there is none now.
    pub fn try_recv(&self) -> Result<InitReport, ChannelError> {
        self.channel.try_recv_report()
    }

    /// Tells a supervised init something (a new log, that its end was
    /// heard), or `Err(Io(EAGAIN))` at once when it does not read: an init
    /// that stops reading cannot stall the daemon.
    pub fn try_send(&self, command: &InitCommand, fds: &[RawFd]) -> Result<(), ChannelError> {
        self.channel.try_send(command, fds)
    }

    /// Blocks until the init exits, then kills whatever is left in the
    /// cgroup and removes it: nothing of the sandbox remains. `reported` is
    /// the init's report of the workload's end, when it sent one.
    pub fn reap(self, reported: Option<&InitReport>) -> Exit {
        let status = if self.child {
            loop {
                match waitpid(self.pid, None) {
                    Err(Errno::EINTR) => continue,
                    other => break other.ok(),
                }
            }
        } else {
            // Not our child: its parent reaps it; a pidfd polls readable once it has exited.
            if let Some(pidfd) = &self.pidfd {
                let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                while !matches!(poll(&mut fds, PollTimeout::NONE), Ok(n) if n > 0) {}
            }
            None
        };
        let exit = end_of(reported, status);
        let oom = self.cgroup.as_ref().is_some_and(Cgroup::oom_killed);
        let exit = if exit == Exit::Signal(libc::SIGKILL) && oom { Exit::OomKilled } else { exit };
        if let Some(cgroup) = &self.cgroup {
            cgroup.discard();
        }
        exit
    }

    /// Blocks until the workload ends and everything of the sandbox is
    /// gone (`paddock run`).
    pub fn wait(self) -> Exit {
        // An exit status alone cannot tell `exit 143` from SIGTERM: the init's report can.
        let report = self.channel.recv_report::<InitReport>().ok();
        self.reap(report.as_ref())
    }

    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        match &self.pidfd {
            Some(pidfd) => sys::pidfd_send_signal(pidfd.as_fd(), signal as libc::c_int),
            None => kill(self.pid, signal),
        }
    }
}

/// Why a recorded sandbox cannot be adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("its init (pid {0}) is gone")]
    Gone(i32),
    #[error("its init (pid {pid}) cannot be reached: pidfd_getfd: {errno}{}", unreachable_hint(*.errno))]
    Unreachable { pid: i32, errno: Errno },
    /// Whether its init runs cannot be told (reading its /proc entry or
    /// opening a pidfd failed otherwise than for a missing process).
    #[error("whether its init (pid {pid}) still runs cannot be told: {errno}")]
    Unknown { pid: i32, errno: Errno },
}

fn unreachable_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => {
            " (a seccomp filter around the daemon refuses it, as systemd-nspawn's does: \
             run the container with --system-call-filter=pidfd_getfd; or Yama's \
             kernel.yama.ptrace_scope is 3)"
        }
        Errno::ENOSYS => " (the kernel is older than 5.6)",
        _ => "",
    }
}

/// Takes over a supervised sandbox that a daemon started (this process
/// before an exec, or a predecessor that died): its init is `pid` if it
/// still started at `start_time`; its channel is the copy of the daemon's
/// end the init keeps (`DAEMON_END_FD`), taken with pidfd_getfd. Whatever
/// the init said while no daemon listened is still there to read.
pub fn adopt(pid: i32, start_time: u64, cgroup: Option<Cgroup>) -> Result<Sandbox, AdoptError> {
    let is_it = || match super::process::start_time_checked(pid) {
        Ok(t) if t == Some(start_time) => Ok(()),
        Ok(_) => Err(AdoptError::Gone(pid)),
        Err(errno) => Err(AdoptError::Unknown { pid, errno }),
    };
    is_it()?;
    let pidfd = sys::pidfd_open(pid).map_err(|errno| match errno {
        Errno::ESRCH => AdoptError::Gone(pid),
        errno => AdoptError::Unknown { pid, errno },
    })?;
    // The pidfd pins the pid: if the start time still matches, it is the init.
    is_it()?;
    let end = sys::pidfd_getfd(pidfd.as_fd(), DAEMON_END_FD).map_err(|errno| AdoptError::Unreachable { pid, errno })?;
    let child = super::process::parent(pid) == Some(std::process::id() as i32);
    Ok(Sandbox { pid: Pid::from_raw(pid), pidfd: Some(pidfd), cgroup, channel: Channel::new(end), child })
}
