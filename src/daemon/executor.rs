//! The effects on sandboxes, behind a trait so the supervisor can be
//! driven by fakes in tests: start, signal, kill. The real executor begins
//! a sandbox (the clone and the init's configuration take a fraction of a
//! millisecond) and hands it to a task of the event loop that listens,
//! never blocking the loop, to its init: its report on the start, requests
//! to rotate the log the init writes, and the workload's end, which it
//! acknowledges so the init may go. The waits that can take long (the
//! init's exit, emptying the cgroup) run on a blocking thread. What
//! happens comes back as `SandboxEvent`s. Sandboxes a predecessor left
//! running are adopted the same way (`adopt`).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::records::{self, Record};
use crate::idmap::Slice;
use crate::logline;
use crate::model::{Exit, Manifest, Signal, WorkloadName};
use crate::reconcile::{Blame, StartFailure, Version};
use crate::sandbox::cgroup::{Cgroup, CgroupError, Layout};
use crate::sandbox::{self, InitCommand, InitMode, InitReport, Sandbox, SpawnError, SpawnRequest, process};

/// What a sandbox did, reported to the event loop.
#[derive(Debug)]
pub enum SandboxEvent {
    Started {
        name: WorkloadName,
        pid: i32,
        latency: Duration,
    },
    StartFailed {
        name: WorkloadName,
        failure: StartFailure,
    },
    /// The init reported the workload's end; it is acknowledged (and the
    /// sandbox let go) once `heard` is answered, after what must be kept of
    /// this end is on disk.
    Ending {
        name: WorkloadName,
        exit: Exit,
        heard: tokio::sync::oneshot::Sender<()>,
    },
    Exited {
        name: WorkloadName,
        exit: Exit,
    },
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

/// A sandbox that exists: enough to signal and kill it. An init this
/// process started is its unreaped child until it is reaped, so its pid
/// cannot be reused meanwhile: no pidfd is needed for it, one descriptor
/// fewer per workload. An adopted one is signalled through its pidfd.
struct Live {
    pid: Pid,
    cgroup: Option<Cgroup>,
    pidfd: Option<OwnedFd>,
}

impl Live {
    fn signal(&self, signal: NixSignal) -> nix::Result<()> {
        match &self.pidfd {
            Some(pidfd) => crate::sandbox::pidfd_send_signal(pidfd.as_fd(), signal as libc::c_int),
            None => kill(self.pid, signal),
        }
    }
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
        // Its output, across runs, in STATE_DIR/logs/NAME.log: the init writes it.
        let log = crate::fsutil::create_private_dir(&state_dir.join("logs"))
            .and_then(|()| logline::open(&self.log_path(name)));
        let log = match log {
            Ok(file) => file,
            Err(e) => {
                let exhausted = e.raw_os_error().is_some_and(|e| is_exhausted(Errno::from_raw(e)));
                return Err(StartFailure::new(if exhausted { Blame::Daemon } else { Blame::Workload }, LogFile(e)));
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
                started: Some(SystemTime::now()),
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
            // While it is set up: a daemon that dies takes the half-built sandbox with it.
            die_with_parent: true,
            // Once it runs, it outlives the daemon, which adopts it again.
            supervised: true,
            // A fresh process for the init, with nothing of the daemon's
            // memory (every manifest's environment) in the sandbox's PID 1.
            init: InitMode::Exec,
            output: Some(log.as_fd()),
            on_cloned: Some(&record),
        };
        let pending = match sandbox::begin(&spawn) {
            Ok(p) => p,
            Err(e) => {
                records::remove(&state_dir, name);
                return Err(StartFailure::new(blame(&e), e));
            }
        };
        drop(log);
        self.live.insert(name.clone(), Live { pid: pending.pid(), cgroup: pending.cgroup().cloned(), pidfd: None });
        let listen = Listener { name: name.clone(), state_dir, events: self.events.clone() };
        tokio::spawn(listen.start(pending, begun));
        Ok(())
    }

    fn signal(&mut self, name: &WorkloadName, signal: Signal) {
        if let Some(live) = self.live.get(name) {
            let signal = NixSignal::try_from(signal.number()).unwrap_or(NixSignal::SIGTERM);
            let _ = live.signal(signal);
        }
    }

    fn kill(&mut self, name: &WorkloadName) {
        if let Some(live) = self.live.get(name) {
            // The init is PID 1 of its pid namespace: its death kills the
            // rest. A sandbox in the host's pid namespace is killed through
            // its cgroup (cgroup.kill, which does not wait).
            let _ = live.signal(NixSignal::SIGKILL);
            if let Some(cgroup) = &live.cgroup {
                cgroup.kill_all(Duration::ZERO);
            }
        }
    }

    fn reap(&mut self, name: &WorkloadName) {
        self.live.remove(name);
    }
}

impl SandboxExecutor {
    /// Takes over a sandbox a predecessor (or this process, before an
    /// exec) left running; from then on it is as if this daemon had
    /// started it. Its end, if it came while no daemon listened, arrives
    /// as an event like any other.
    pub fn adopt(&mut self, name: &WorkloadName, sandbox: Sandbox) {
        self.live.insert(
            name.clone(),
            Live {
                pid: sandbox.pid,
                cgroup: sandbox.cgroup.clone(),
                pidfd: sandbox.pidfd.as_ref().and_then(|p| p.try_clone().ok()),
            },
        );
        let listen =
            Listener { name: name.clone(), state_dir: self.settings.state_dir.clone(), events: self.events.clone() };
        tokio::spawn(listen.running(sandbox, true));
    }
}

/// The log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the workload's log: {0}")]
struct LogFile(std::io::Error);

fn is_exhausted(errno: Errno) -> bool {
    matches!(errno, Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOSPC)
}

/// Listens to one sandbox's init, on the event loop, until its end.
struct Listener {
    name: WorkloadName,
    state_dir: PathBuf,
    events: mpsc::UnboundedSender<SandboxEvent>,
}

impl Listener {
    /// The init's report on the start, then its life.
    async fn start(self, pending: sandbox::Pending, begun: Instant) {
        let _ = readable(pending.channel_fd()).await;
        // Readable: the report (or the init's death) is there; this does not block.
        let sandbox = match pending.finish() {
            Ok(sandbox) => sandbox,
            Err(e) => {
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
    async fn running(self, mut sandbox: Sandbox, adopted: bool) {
        // Our own children are signalled by pid: the pidfd is one descriptor too many.
        if sandbox.is_child() {
            sandbox.pidfd = None;
        }
        // Adopted: if the end was read by a predecessor that died before it
        // acknowledged it, the init says it again.
        if adopted {
            let _ = sandbox.send(&InitCommand::Query, &[]);
        }
        let reported = loop {
            if readable(sandbox.channel_fd()).await.is_err() {
                break None;
            }
            match sandbox.try_recv() {
                Ok((InitReport::LogFull, _)) => self.rotate(&sandbox),
                Ok((InitReport::LogFailing { error }, _)) => {
                    tracing::error!(workload = %self.name, %error, "cannot write the log; its output is dropped until it can");
                }
                Ok((InitReport::LogWritten { lost }, _)) => {
                    tracing::warn!(workload = %self.name, lost_bytes = lost, "the log is written again");
                }
                Ok((end @ InitReport::Exited { .. }, _)) => {
                    // Kept first (a one-shot's end), then heard: the init may go.
                    let (heard, kept) = tokio::sync::oneshot::channel();
                    let exit = sandbox::end_of(Some(&end), None);
                    let _ = self.events.send(SandboxEvent::Ending { name: self.name.clone(), exit, heard });
                    let _ = kept.await;
                    let _ = sandbox.send(&InitCommand::Ack, &[]);
                    break Some(end);
                }
                Ok((other, _)) => {
                    tracing::warn!(workload = %self.name, report = ?other, "unexpected report from the init")
                }
                Err(sandbox::ChannelError::Io(Errno::EAGAIN)) => {}
                // The init is gone without a word.
                Err(_) => break None,
            }
        };
        // The init's exit and the cgroup's emptying may take a while: not on the loop.
        let exit =
            tokio::task::spawn_blocking(move || sandbox.reap(reported.as_ref())).await.unwrap_or(Exit::Code(125));
        records::remove(&self.state_dir, &self.name);
        let _ = self.events.send(SandboxEvent::Exited { name: self.name, exit });
    }

    /// The init's log is full: the files move down one, and the init gets a new one.
    fn rotate(&self, sandbox: &Sandbox) {
        match logline::rotate(&log_path(&self.state_dir, &self.name), logline::LOG_KEEP) {
            Ok(file) => {
                let _ = sandbox.send(&InitCommand::NewLog, &[file.as_raw_fd()]);
            }
            Err(e) => tracing::error!(workload = %self.name, error = %e, "cannot rotate the log"),
        }
    }
}
