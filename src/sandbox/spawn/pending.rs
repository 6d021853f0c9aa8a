//! A sandbox begun and not yet finished (`Pending`): its init has its
//! configuration and builds the root, and `finish` reads its report. What
//! a failed start leaves (`Leftover`) is killed, reaped and its cgroup
//! removed, and so is a pending sandbox that is dropped unfinished.

use std::os::fd::RawFd;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use super::SpawnError;
use crate::sandbox::cgroup::Cgroup;
use crate::sandbox::channel::{Channel, ChannelError};
use crate::sandbox::config::InitReport;
use crate::sandbox::running::Sandbox;

/// A sandbox whose init has its configuration and is building the root:
/// `finish` waits for its report. Starting many sandboxes, the daemon
/// begins them all and then finishes them, so their inits set up in
/// parallel instead of one after the other.
#[derive(Debug)]
#[must_use = "a pending sandbox must be finished (or dropped, which kills it)"]
pub struct Pending {
    sandbox: Option<Sandbox>,
}

impl Pending {
    /// `sandbox`, cloned and sent its configuration.
    pub(super) fn begun(sandbox: Sandbox) -> Self {
        Pending { sandbox: Some(sandbox) }
    }

    /// The sandbox's init, while it sets up.
    pub fn pid(&self) -> Pid {
        self.sandbox.as_ref().expect("not finished").pid
    }

    /// The sandbox's cgroup, if it has one.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.sandbox.as_ref().expect("not finished").cgroup.as_ref()
    }

    /// The init's pidfd, from its clone, for whoever signals it: once the
    /// init is reaped its pid may be another process's, the pidfd never.
    pub fn take_pidfd(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.sandbox.as_mut().expect("not finished").pidfd.take()
    }

    /// The descriptor that turns readable when the init reports on its
    /// setup (or dies): wait on it, then call `finish`, which then does not block.
    pub fn channel_fd(&self) -> RawFd {
        self.sandbox.as_ref().expect("not finished").channel_fd()
    }

    /// Waits for the init's report: the sandbox runs its workload, or it
    /// failed and nothing of it is left.
    pub fn finish(self) -> Result<Sandbox, SpawnError> {
        self.report().map_err(|(e, leftover)| {
            leftover.clean();
            e
        })
    }

    /// The init's report, read without waiting once the channel is
    /// readable. A failed start's remains are handed back, to be cleaned
    /// up (which waits for the init's end and its cgroup's emptying)
    /// where waiting is allowed.
    pub fn report(mut self) -> Result<Sandbox, (SpawnError, Leftover)> {
        let sandbox = self.sandbox.take().expect("finished once");
        match report(sandbox.pid, &sandbox.channel) {
            Ok(()) => Ok(sandbox),
            Err(e) => Err((e, Leftover(Some(Box::new(sandbox))))),
        }
    }
}

/// What a failed start left: killed, reaped and its cgroup removed by
/// `clean`, or when dropped.
pub struct Leftover(Option<Box<Sandbox>>);

impl Leftover {
    /// Kills what is left and waits until it is gone (blocking).
    pub fn clean(mut self) {
        if let Some(sandbox) = self.0.take() {
            abandon(&sandbox);
        }
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(sandbox) = self.0.take() {
            abandon(&sandbox);
        }
    }
}

impl Drop for Pending {
    /// Never finished (a panic between begin and finish): nothing is left behind.
    fn drop(&mut self) {
        if let Some(sandbox) = &self.sandbox {
            abandon(sandbox);
        }
    }
}

/// Kills a sandbox that did not start, reaps its init and removes its
/// cgroup. The init is this process's child and not yet reaped (a zombie
/// at worst), so its pid is still its own.
fn abandon(sandbox: &Sandbox) {
    let _ = kill(sandbox.pid, Signal::SIGKILL);
    let _ = waitpid(sandbox.pid, None);
    discard_cgroup(sandbox.cgroup.as_ref());
}

/// Kills what is left in a cgroup and removes it.
pub(super) fn discard_cgroup(cgroup: Option<&Cgroup>) {
    if let Some(cgroup) = cgroup {
        cgroup.discard();
    }
}

/// The init's report on its setup: Ok once the workload runs.
fn report(pid: Pid, channel: &Channel) -> Result<(), SpawnError> {
    match channel.recv_report::<InitReport>() {
        Ok(InitReport::Started { .. }) => Ok(()),
        Ok(InitReport::SetupFailed { step, error }) => Err(SpawnError::Setup { step, error }),
        Ok(InitReport::ExecFailed { command, errno }) => Err(SpawnError::Exec { command, errno }),
        // The init always reports Started before anything else.
        Ok(report) => Err(SpawnError::Setup { step: "report".to_owned(), error: format!("out of order: {report:?}") }),
        Err(ChannelError::Closed) => {
            // Its status, read without reaping it: the init stays a zombie,
            // its pid its own, until `abandon` kills and reaps it (reaped
            // here, that kill would reach whatever process got the pid).
            let status =
                waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap_or(WaitStatus::StillAlive);
            Err(SpawnError::InitDied(status))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    /// An init that dies before its report: the start fails, and what is
    /// left is cleaned up later (on a blocking thread, in the daemon). Until
    /// then its pid stays its own; afterwards nothing else was signalled.
    #[test]
    fn an_init_that_died_keeps_its_pid_until_its_remains_are_cleaned_up() {
        assert!(nix::unistd::geteuid().is_root(), "this test chooses a pid (clone3's set_tid) and must run as root");
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        drop(theirs);
        // Reaped by the code under test, not through std's handle.
        #[allow(clippy::zombie_processes)]
        let pid = Pid::from_raw(std::process::Command::new("/bin/true").spawn().unwrap().id() as i32);
        let sandbox = Sandbox { pid, pidfd: None, cgroup: None, channel: Channel::new(ours), child: true };
        let Err((SpawnError::InitDied(WaitStatus::Exited(_, 0)), leftover)) = Pending::begun(sandbox).report() else {
            panic!("the init's death is the start's failure, with its status")
        };
        // Another process asks for the pid in the meantime.
        let other = crate::sandbox::child_with_pid(pid.as_raw());
        leftover.clean();
        if let Ok(other) = other {
            let alive = waitpid(other, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            let _ = kill(other, Signal::SIGKILL);
            let _ = waitpid(other, None);
            panic!("the dead init's pid was free before its remains were cleaned up (then: {alive:?})");
        }
        assert_eq!(other, Err(nix::errno::Errno::EEXIST), "the pid is held by the init until it is reaped");
        assert_eq!(waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)), Err(nix::errno::Errno::ECHILD), "reaped");
    }
}
