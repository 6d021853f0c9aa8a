//! Listening to one sandbox's init on the event loop: its report on the
//! start, what it says while the workload runs (a full log, the end), and
//! its end, turned into events for the supervisor.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;
use tokio::sync::mpsc;

use super::executor::{SandboxEvent, blame, log_path};
use super::records;
use crate::logline;
use crate::model::{Exit, WorkloadName};
use crate::reconcile::StartFailure;
use crate::sandbox::{self, InitCommand, InitReport, Sandbox};

/// A descriptor the event loop waits on without owning it: the sandbox
/// that owns it lives in the same task and is dropped after this.
struct Borrowed(RawFd);

impl std::os::fd::AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Waits until `fd` is readable (a report, or the init's end).
async fn readable(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: `fd` belongs to a sandbox that the calling task owns and drops
    // only after this AsyncFd (a local of this function) is gone.
    let afd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(Borrowed(fd), tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut guard = afd.readable().await?;
    // Readiness is only looked at, never consumed here: the read happens after.
    guard.retain_ready();
    Ok(())
}

/// Listens to one sandbox's init, on the event loop, until its end.
pub(super) struct Listener {
    pub(super) name: WorkloadName,
    pub(super) state_dir: PathBuf,
    pub(super) events: mpsc::UnboundedSender<SandboxEvent>,
}

impl Listener {
    /// The init's report on the start, then its life.
    pub(super) async fn start(self, pending: sandbox::Pending, begun: Instant) {
        // Readable: the report (or the init's death) is there, and reading
        // it does not block. Where it cannot be watched (epoll refused it,
        // out of memory), the read waits, off the loop.
        let reported = match readable(pending.channel_fd()).await {
            Ok(()) => pending.report(),
            Err(e) => {
                tracing::warn!(workload = %self.name, error = %e, "cannot watch the init's channel; its report is waited for on a thread");
                match super::workers::blocking(move || pending.report()).await {
                    Ok(reported) => reported,
                    // The thread panicked: the sandbox went with it (its Drop kills it).
                    Err(_) => {
                        records::remove(&self.state_dir, &self.name);
                        let failure = StartFailure::new(
                            crate::reconcile::Blame::Host,
                            std::io::Error::other("waiting for the init's report failed"),
                        );
                        let _ = self.events.send(SandboxEvent::StartFailed { name: self.name, failure });
                        return;
                    }
                }
            }
        };
        let sandbox = match reported {
            Ok(sandbox) => sandbox,
            Err((e, leftover)) => {
                // Killing and reaping what is left may wait: not on the loop.
                let _ = super::workers::blocking(move || leftover.clean()).await;
                records::remove(&self.state_dir, &self.name);
                let failure = StartFailure::new(blame(&e), e);
                let _ = self.events.send(SandboxEvent::StartFailed { name: self.name, failure });
                return;
            }
        };
        let pid = sandbox.pid.as_raw();
        let _ = self.events.send(SandboxEvent::Started { name: self.name.clone(), pid, latency: begun.elapsed() });
        self.running(sandbox, false).await;
    }

    /// What the init says while its workload runs, until its end.
    pub(super) async fn running(self, sandbox: Sandbox, adopted: bool) {
        // Adopted: if the end was read by a predecessor that died before it
        // acknowledged it, the init says it again.
        if adopted {
            let _ = sandbox.try_send(&InitCommand::Query, &[]);
        }
        // The sandbox's mount namespace, held from its end until the next
        // start is under way (see `hold_mounts`).
        let mut mounts = None;
        let reported = loop {
            if readable(sandbox.channel_fd()).await.is_err() {
                break None;
            }
            match sandbox.try_recv() {
                Ok(InitReport::LogFull) => self.rotate(&sandbox),
                Ok(InitReport::LogFailing { error }) => {
                    tracing::error!(workload = %self.name, %error, "cannot write the log; its output is dropped until it can");
                }
                Ok(InitReport::LogWritten { lost }) => {
                    tracing::warn!(workload = %self.name, lost_bytes = lost, "the log is written again");
                }
                Ok(end @ InitReport::Exited { .. }) => {
                    // Kept first (a one-shot's end), then heard: the init may go.
                    let (heard, kept) = tokio::sync::oneshot::channel();
                    let exit = sandbox::end_of(Some(&end), None);
                    let ended = ended_at(&end);
                    let _ = self.events.send(SandboxEvent::Ending { name: self.name.clone(), exit, ended, heard });
                    // Or the init is gone meanwhile (killed by a stop while
                    // its end waits for room on the disk): no one to tell.
                    // (A started sandbox's pidfd is the executor's: this
                    // one, of our unreaped child, opened by its pid, is its own.)
                    let opened = match &sandbox.pidfd {
                        Some(_) => None,
                        None => sandbox::pidfd_open(sandbox.pid.as_raw()).ok(),
                    };
                    match sandbox.pidfd.as_ref().or(opened.as_ref()).map(AsRawFd::as_raw_fd) {
                        Some(pidfd) => tokio::select! {
                            _ = kept => {}
                            _ = readable(pidfd) => {}
                        },
                        None => drop(kept.await),
                    }
                    mounts = hold_mounts(&sandbox);
                    let _ = sandbox.try_send(&InitCommand::Ack, &[]);
                    break Some(end);
                }
                // Adopted in the moment between its record and its report
                // (its init no longer dies with the daemon from its record
                // on): its start, said to this daemon. A failed one ends it.
                Ok(InitReport::Started { .. }) if adopted => {}
                Ok(InitReport::SetupFailed { step, error }) => {
                    tracing::error!(workload = %self.name, %step, %error, "its start failed (begun by the daemon before this one); its end follows")
                }
                Ok(InitReport::ExecFailed { command, errno }) => {
                    let error = Errno::from_raw(errno).desc();
                    tracing::error!(workload = %self.name, %command, %error, "cannot execute its command (a start begun by the daemon before this one); its end follows")
                }
                Ok(other) => {
                    tracing::warn!(workload = %self.name, report = ?other, "unexpected report from the init")
                }
                Err(sandbox::ChannelError::Io(Errno::EAGAIN)) => {}
                // The init is gone without a word.
                Err(sandbox::ChannelError::Closed | sandbox::ChannelError::Io(_)) => break None,
                // A message that is no report (a workload allowed to trace
                // its init could write one): ignored, the init is still there.
                Err(error) => {
                    tracing::warn!(workload = %self.name, %error, "a message from the init that is no report is ignored")
                }
            }
        };
        let ended = reported.as_ref().and_then(ended_at);
        // The init's exit and the cgroup's emptying may take a while: not on the loop.
        let exit = super::workers::blocking(move || sandbox.reap(reported.as_ref())).await.unwrap_or(Exit::Code(125));
        records::remove(&self.state_dir, &self.name);
        let _ = self.events.send(SandboxEvent::Exited { name: self.name, exit, ended });
        // Torn down beside the next start, off the loop.
        if let Some(mounts) = mounts {
            let _ = super::workers::blocking(move || drop(mounts)).await;
        }
    }

    /// The init's log is full: the files move down one, and the init gets
    /// a new one. Only a full log: asks that queued while no daemon ran, or
    /// while a rotation was on its way, come after it and are not rotations.
    fn rotate(&self, sandbox: &Sandbox) {
        let path = log_path(&self.state_dir, &self.name);
        match logline::for_new_log(&path, logline::LOG_MAX_BYTES, logline::LOG_KEEP) {
            // Not waited for: an init that does not read cannot stall this task.
            Ok(file) => {
                let _ = sandbox.try_send(&InitCommand::NewLog, &[file.as_raw_fd()]);
            }
            Err(e) => {
                tracing::error!(workload = %self.name, file = %path.display(), error = %e, "cannot rotate the log; it is asked again, and past twice its size the output is dropped until it is rotated")
            }
        }
    }
}

/// The mount namespace of a sandbox whose init waits for the end's
/// acknowledgment, held open: its init's exit would otherwise tear it down
/// (its mounts, with two expedited RCU grace periods) before the exit is
/// seen and the next start begins; its last holder is then a worker
/// thread, beside that start. None when it cannot be opened (the init
/// gone already): its exit tears it down, as it would.
fn hold_mounts(sandbox: &Sandbox) -> Option<std::fs::File> {
    // The init waits for the acknowledgment, not yet sent; or it is gone,
    // killed by a stop, and its pid may name another process now (an
    // adopted init another reaped): what was opened is then let go.
    let mounts = std::fs::File::open(format!("/proc/{}/ns/mnt", sandbox.pid)).ok()?;
    // A sandbox this daemon started: its pidfd is the executor's, and its
    // init, our unreaped child, keeps its pid.
    let Some(pidfd) = sandbox.pidfd.as_ref() else { return Some(mounts) };
    let mut poll = [nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN)];
    let gone = nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO).map_or(true, |ready| ready > 0);
    (!gone).then_some(mounts)
}

/// When the workload of an init's end report ended, on this process's
/// clock: the report says when on the boot clock. None when it does not
/// (an older init's) or when that is not before now.
fn ended_at(report: &InitReport) -> Option<std::time::Instant> {
    let InitReport::Exited { at_us: Some(at), .. } = report else { return None };
    crate::sandbox::process::instant_at(std::time::Duration::from_micros(*at))
}
