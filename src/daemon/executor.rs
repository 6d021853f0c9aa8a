//! The effects on sandboxes, behind a trait so the supervisor can be
//! driven by fakes in tests: start, signal, kill. The real executor begins
//! a sandbox (the clone and the init's configuration take a fraction of a
//! millisecond) and hands it to a task of the event loop that waits, never
//! blocking the loop, for the init's report, then for the workload's end;
//! the waits that can take long (the init's exit, emptying the cgroup) run
//! on a blocking thread. What happens comes back as `SandboxEvent`s.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::logs::copy_to_log;
use super::records::{self, Record};
use crate::idmap::Slice;
use crate::model::{Exit, Manifest, Signal, WorkloadName};
use crate::reconcile::{Blame, StartFailure, Version};
use crate::sandbox::cgroup::{Cgroup, CgroupError, Layout};
use crate::sandbox::{self, InitMode, SpawnError, SpawnRequest, process};

/// What a sandbox did, reported to the event loop.
#[derive(Debug)]
pub enum SandboxEvent {
    Started { name: WorkloadName, pid: i32, latency: Duration },
    StartFailed { name: WorkloadName, failure: StartFailure },
    Exited { name: WorkloadName, exit: Exit },
}

/// One start to begin.
pub struct StartRequest<'a> {
    pub name: &'a WorkloadName,
    pub version: Version,
    pub manifest: &'a Manifest,
    pub slice: Slice,
}

pub trait Executor {
    /// Begins a start; its outcome arrives later as an event. An error is
    /// a start that failed at once (nothing is left of it).
    fn start(&mut self, request: StartRequest<'_>) -> Result<(), StartFailure>;
    /// Sends a signal to the sandbox's init (which forwards it to the workload).
    fn signal(&mut self, name: &WorkloadName, signal: Signal);
    /// Kills every process of the sandbox.
    fn kill(&mut self, name: &WorkloadName);
    /// The sandbox has exited and been cleaned up: forget it.
    fn reap(&mut self, name: &WorkloadName);
}

/// Whose fault a spawn error is (see `Blame`).
pub fn blame(error: &SpawnError) -> Blame {
    let exhausted = |errno: Errno| matches!(errno, Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOSPC);
    match error {
        SpawnError::OpenSelf(e) | SpawnError::DevNull(e) | SpawnError::SocketPair(e) | SpawnError::Clone(e)
            if exhausted(*e) =>
        {
            Blame::Daemon
        }
        SpawnError::Record(e) if e.raw_os_error().is_some_and(|e| exhausted(Errno::from_raw(e))) => Blame::Daemon,
        SpawnError::Cgroup(CgroupError::MissingController { .. } | CgroupError::EnableController { .. }) => Blame::Host,
        SpawnError::OutsideSlice { .. } | SpawnError::Source(_) => Blame::Host,
        _ => Blame::Workload,
    }
}

/// A sandbox that exists: enough to signal and kill it. (The init is this
/// process's unreaped child until `Sandbox::wait`, so its pid cannot be
/// reused meanwhile: no pidfd is needed, one descriptor fewer per workload.)
struct Live {
    pid: Pid,
    cgroup: Option<Cgroup>,
}

/// What the real executor needs from the daemon's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub volumes_root: PathBuf,
    pub cgroups: Layout,
}

pub struct SandboxExecutor {
    settings: Settings,
    events: mpsc::UnboundedSender<SandboxEvent>,
    live: BTreeMap<WorkloadName, Live>,
}

impl SandboxExecutor {
    pub fn new(settings: Settings, events: mpsc::UnboundedSender<SandboxEvent>) -> Self {
        SandboxExecutor { settings, events, live: BTreeMap::new() }
    }

    fn log_path(&self, name: &WorkloadName) -> PathBuf {
        log_path(&self.settings.state_dir, name)
    }
}

/// Where a workload's output is kept.
pub fn log_path(state_dir: &Path, name: &WorkloadName) -> PathBuf {
    state_dir.join("logs").join(format!("{name}.log"))
}

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

impl Executor for SandboxExecutor {
    fn start(&mut self, request: StartRequest<'_>) -> Result<(), StartFailure> {
        let StartRequest { name, version, manifest, slice } = request;
        let state_dir = self.settings.state_dir.clone();
        // Its output, across runs, in STATE_DIR/logs/NAME.log.
        let pipe = crate::fsutil::create_private_dir(&state_dir.join("logs"))
            .and_then(|()| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from));
        let (read, write): (OwnedFd, OwnedFd) = match pipe {
            Ok(pipe) => pipe,
            Err(e) => {
                let blame = if e.raw_os_error().is_some_and(|e| e == libc::EMFILE || e == libc::ENFILE) {
                    Blame::Daemon
                } else {
                    Blame::Workload
                };
                return Err(StartFailure::new(blame, LogPipe(e)));
            }
        };
        // Written before the sandbox may run anything: a successor daemon
        // finds every sandbox that ever ran, whenever this one dies.
        let record = |cloned: &sandbox::Cloned<'_>| {
            let record = Record {
                pid: cloned.pid.as_raw(),
                start_time: process::start_time(cloned.pid.as_raw()).unwrap_or(0),
                cgroup: cloned.cgroup.map(|c| c.dirs().to_vec()).unwrap_or_default(),
                slice,
                version: Some(version),
            };
            records::write(&state_dir, name, &record)
        };
        let begun = Instant::now();
        let spawn = SpawnRequest {
            name,
            manifest,
            slice,
            cgroups: &self.settings.cgroups,
            volumes_root: &self.settings.volumes_root,
            // A daemon that dies takes its sandboxes with it: no orphans.
            die_with_parent: true,
            // A fresh process for the init, with nothing of the daemon's
            // memory (every manifest's environment) in the sandbox's PID 1.
            init: InitMode::Exec,
            output: Some(write.as_fd()),
            on_cloned: Some(&record),
        };
        let pending = match sandbox::begin(&spawn) {
            Ok(p) => p,
            Err(e) => {
                records::remove(&state_dir, name);
                return Err(StartFailure::new(blame(&e), e));
            }
        };
        // Our copy of the write end must go, so the log copier sees the end.
        drop(write);
        tokio::spawn(copy_to_log(read, self.log_path(name)));
        let cgroup = pending.cgroup().cloned();
        self.live.insert(name.clone(), Live { pid: pending.pid(), cgroup });
        tokio::spawn(watch(name.clone(), pending, begun, state_dir, self.events.clone()));
        Ok(())
    }

    fn signal(&mut self, name: &WorkloadName, signal: Signal) {
        if let Some(live) = self.live.get(name) {
            let signal = NixSignal::try_from(signal.number()).unwrap_or(NixSignal::SIGTERM);
            let _ = kill(live.pid, signal);
        }
    }

    fn kill(&mut self, name: &WorkloadName) {
        if let Some(live) = self.live.get(name) {
            // The init is PID 1 of its pid namespace: its death kills the
            // rest. A sandbox in the host's pid namespace is killed through
            // its cgroup (cgroup.kill, which does not wait).
            let _ = kill(live.pid, NixSignal::SIGKILL);
            if let Some(cgroup) = &live.cgroup {
                cgroup.kill_all(Duration::ZERO);
            }
        }
    }

    fn reap(&mut self, name: &WorkloadName) {
        self.live.remove(name);
    }
}

/// The log pipe could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot capture the workload's output: {0}")]
struct LogPipe(std::io::Error);

/// The init's report, then the workload's end, each waited for on the
/// event loop without blocking it.
async fn watch(
    name: WorkloadName,
    pending: sandbox::Pending,
    begun: Instant,
    state_dir: PathBuf,
    events: mpsc::UnboundedSender<SandboxEvent>,
) {
    let fd = pending.channel_fd();
    let _ = readable(fd).await;
    // Readable: the report (or the init's death) is there; this does not block.
    let mut sandbox = match pending.finish() {
        Ok(sandbox) => sandbox,
        Err(e) => {
            records::remove(&state_dir, &name);
            let failure = StartFailure::new(blame(&e), e);
            let _ = events.send(SandboxEvent::StartFailed { name, failure });
            return;
        }
    };
    // The daemon watches the channel and signals by pid: the pidfd is spare.
    sandbox.pidfd = None;
    let pid = sandbox.pid.as_raw();
    let _ = events.send(SandboxEvent::Started { name: name.clone(), pid, latency: begun.elapsed() });
    let _ = readable(sandbox.channel_fd()).await;
    // The init's exit and the cgroup's emptying may take a while: not on the loop.
    let exit = tokio::task::spawn_blocking(move || sandbox.wait()).await.unwrap_or(Exit::Code(125));
    records::remove(&state_dir, &name);
    let _ = events.send(SandboxEvent::Exited { name, exit });
}
