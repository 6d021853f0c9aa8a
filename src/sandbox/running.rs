//! A sandbox once its workload runs: waiting for its end, signalling it,
//! and taking over one that a daemon started before this one (adoption).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

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
    /// this process's child). The daemon drops it for its own children,
    /// which it signals by pid (unreaped, their pid cannot be reused).
    pub pidfd: Option<OwnedFd>,
    /// None when nothing needs one (see `needs_cgroup`).
    pub cgroup: Option<Cgroup>,
    /// Shared with the `Ack` that lets the init go (see `acknowledger`).
    pub(super) channel: Arc<Channel>,
    /// Whether this process is the init's parent, and so reaps it (an
    /// adopted init is not, unless this process re-executed itself).
    pub(super) child: bool,
    /// Whether the sandbox has a pid namespace of its own: then nothing of
    /// a run outlives its init (the kernel kills the rest when it exits).
    pub(super) own_pid_ns: bool,
}

/// Tells an init that its end was heard, so that it may exit: held apart
/// from the sandbox so that whoever kept the end (the supervisor) says it
/// the moment it is kept.
#[derive(Debug)]
pub struct Acknowledger(Arc<Channel>);

impl Acknowledger {
    pub fn ack(self) {
        // An init already gone (killed meanwhile) needs no answer.
        let _ = self.0.send(&InitCommand::Ack, &[]);
    }
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
    /// Whether this process is the init's parent (and so reaps it).
    pub fn is_child(&self) -> bool {
        self.child
    }

    /// The descriptor that turns readable when the init has something to
    /// say (or has exited): wait on it, then `try_recv`.
    pub fn channel_fd(&self) -> RawFd {
        self.channel.fd().as_raw_fd()
    }

    /// The init's next message, with any descriptors sent along, or
    /// `Err(Io(EAGAIN))` when there is none now.
    pub fn try_recv(&self) -> Result<(InitReport, Vec<OwnedFd>), ChannelError> {
        self.channel.try_recv()
    }

    /// Tells a supervised init something (a new log, that its end was heard).
    pub fn send(&self, command: &InitCommand, fds: &[RawFd]) -> Result<(), ChannelError> {
        self.channel.send(command, fds)
    }

    /// What lets the init go once its end is heard (`InitCommand::Ack`).
    pub fn acknowledger(&self) -> Acknowledger {
        Acknowledger(self.channel.clone())
    }

    /// How the workload ended, from the init's report alone: the end of
    /// the run, although its init may still be exiting. An OOM kill is
    /// this run's if the cgroup counted one since the run began.
    pub fn exit_of(&self, report: &InitReport) -> Exit {
        self.oom(end_of(Some(report), None))
    }

    fn oom(&self, exit: Exit) -> Exit {
        let oom = self.cgroup.as_ref().is_some_and(Cgroup::oom_killed);
        if exit == Exit::Signal(libc::SIGKILL) && oom { Exit::OomKilled } else { exit }
    }

    /// Whether the next run may begin while this one's init is still
    /// exiting (see `wait_gone`): only with a pid namespace of its own,
    /// where the kernel leaves nothing of the run behind its init (with
    /// the host's, what is left must be killed through the cgroup first),
    /// and without a pids limit, which the exiting init would still count
    /// against the next run.
    pub fn may_overlap(&self) -> bool {
        self.own_pid_ns && !self.cgroup.as_ref().is_some_and(Cgroup::limits_pids)
    }

    /// Blocks until the init, told its end was heard, is gone (reaped,
    /// when it is this process's child). The cgroup is left as it is: it
    /// may already be the next run's (see `may_overlap`); whoever decides
    /// that removes it.
    pub fn wait_gone(self) {
        self.wait_init();
    }

    /// A descriptor that turns readable once the init has exited, to wait
    /// on without a thread: its pidfd, opened now for a child of this
    /// process (whose pid cannot be reused while it is unreaped).
    pub fn exit_fd(&mut self) -> Option<RawFd> {
        if self.pidfd.is_none() {
            self.pidfd = sys::pidfd_open(self.pid.as_raw()).ok();
        }
        self.pidfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reaps an init that has exited (`exit_fd` readable), without
    /// blocking; gives the sandbox back if it has not exited after all.
    pub fn reap_exited(self) -> Result<(), Self> {
        if !self.child {
            return Ok(());
        }
        match waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => Err(self),
            _ => Ok(()),
        }
    }

    fn wait_init(&self) -> Option<WaitStatus> {
        if self.child {
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
        }
    }

    /// Blocks until the init exits, then kills whatever is left in the
    /// cgroup and removes it: nothing of the sandbox remains. `reported` is
    /// the init's report of the workload's end, when it sent one.
    pub fn reap(self, reported: Option<&InitReport>) -> Exit {
        let status = self.wait_init();
        let exit = self.oom(end_of(reported, status));
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all(Duration::from_secs(5));
            cgroup.remove();
        }
        exit
    }

    /// Blocks until the workload ends and everything of the sandbox is
    /// gone (`paddock run`).
    pub fn wait(self) -> Exit {
        // An exit status alone cannot tell `exit 143` from SIGTERM: the init's report can.
        let report = self.channel.recv::<InitReport>().ok().map(|(report, _)| report);
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
    if super::process::start_time(pid) != Some(start_time) {
        return Err(AdoptError::Gone(pid));
    }
    let pidfd = sys::pidfd_open(pid).map_err(|_| AdoptError::Gone(pid))?;
    // The pidfd pins the pid: if the start time still matches, it is the init.
    if super::process::start_time(pid) != Some(start_time) {
        return Err(AdoptError::Gone(pid));
    }
    let end = sys::pidfd_getfd(pidfd.as_fd(), DAEMON_END_FD).map_err(|errno| AdoptError::Unreachable { pid, errno })?;
    let child = super::process::parent(pid) == Some(std::process::id() as i32);
    let own_pid_ns = own_pid_ns(pid);
    Ok(Sandbox {
        pid: Pid::from_raw(pid),
        pidfd: Some(pidfd),
        cgroup,
        channel: Arc::new(Channel::new(end)),
        child,
        own_pid_ns,
    })
}

/// Whether `pid` is in another pid namespace than this process (false
/// when either cannot be read: then the sandbox is treated as sharing
/// the host's, the cautious side).
fn own_pid_ns(pid: i32) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    matches!((ns(&pid.to_string()), ns("self")), (Some(theirs), Some(ours)) if theirs != ours)
}
