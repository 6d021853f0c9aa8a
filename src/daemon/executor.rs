//! The effects on sandboxes, behind a trait so the supervisor can be
//! driven by fakes in tests: start, signal, kill. The real executor begins
//! a sandbox (the clone and the init's configuration take a fraction of a
//! millisecond) and hands it to a task of the event loop that listens,
//! never blocking the loop, to its init: its report on the start, requests
//! to rotate the log the init writes, and the workload's end, which it
//! acknowledges so the init may go. The waits that can take long (the
//! init's exit, emptying the cgroup) run on a blocking thread. What
//! happens comes back as `SandboxEvent`s. Sandboxes a predecessor left
//! running are adopted the same way (`adopt`). A workload's network
//! attachment, which a start may wait for, is kept in `attachments`.

mod attachments;
mod contract;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::Signal as NixSignal;
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::listener::Listener;
use super::records::{self, Record};
use crate::idmap::Slice;
use crate::logline;
use crate::model::{Manifest, Signal, WorkloadName};
use crate::network::{Attachment, Networks};
use crate::reconcile::{Blame, Desired, StartFailure, Version};
use crate::sandbox::cgroup::{Cgroup, CgroupError, Layout, Place};
use crate::sandbox::zygote::Zygote;
use crate::sandbox::{self, ChannelError, InitMode, Sandbox, SpawnError, SpawnRequest, process};
pub use attachments::{AttachError, NetworkView};
use attachments::{Attachments, Prepared};

pub use contract::{Executor, SandboxEvent, StartRequest};

/// Whose fault a spawn error is (see `Blame`).
pub fn blame(error: &SpawnError) -> Blame {
    match error {
        SpawnError::OpenSelf(e) | SpawnError::DevNull(e) | SpawnError::SocketPair(e) | SpawnError::Clone(e)
            if sandbox::is_exhausted(*e) =>
        {
            Blame::Daemon
        }
        SpawnError::Record(e)
            if e.raw_os_error().is_some_and(|e| sandbox::is_exhausted(Errno::from_raw(e)) || e == libc::EDQUOT) =>
        {
            Blame::Daemon
        }
        // The state directory refuses the record (read-only, an I/O
        // error): nothing the workload did; `paddock reload` tries again
        // once it is mended, rather than a backoff that gives up on it.
        SpawnError::Record(e) if e.raw_os_error().is_some() => Blame::Host,
        // Opening the rootfs or a mount source takes descriptors too: a
        // daemon out of them is not a host without the path. (Only these
        // two: a network filesystem may answer ENOMEM or EAGAIN itself, and
        // would be retried for ever without counting against the workload.)
        SpawnError::Source(e) if e.errno().is_some_and(|e| matches!(e, Errno::EMFILE | Errno::ENFILE)) => Blame::Daemon,
        SpawnError::Idmap { errno, .. } | SpawnError::Channel(ChannelError::Io(errno))
            if sandbox::is_exhausted(*errno) =>
        {
            Blame::Daemon
        }
        SpawnError::Cgroup(
            CgroupError::MissingController { .. }
            | CgroupError::EnableController { .. }
            | CgroupError::NoSwapAccounting { .. },
        ) => Blame::Host,
        SpawnError::OutsideSlice { .. } | SpawnError::Source(_) | SpawnError::NoSetpcap => Blame::Host,
        // The host's key quota (`kernel.keys.maxkeys`): raised, `paddock
        // reload` tries the workload again, as any host failure.
        SpawnError::Setup { step, .. } if step == sandbox::KEYRING_STEP => Blame::Host,
        _ => Blame::Workload,
    }
}

/// A start whose sandbox could not be recorded, with the record's file.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot record the sandbox in {} before releasing it: {source} (free space on that filesystem, or mend what is there)",
    path.display()
)]
struct RecordFailed {
    path: PathBuf,
    source: std::io::Error,
}

/// A sandbox that exists: enough to signal and kill it, through a pidfd
/// of its init (its clone's, or for an adopted one the predecessor's).
/// Never by pid alone: an init this process started is reaped on a
/// blocking thread, and until the supervisor hears of that (after the
/// cgroup is emptied, up to seconds later) a stop or a kill would reach
/// whatever process was given the pid meanwhile.
struct Live {
    pid: Pid,
    cgroup: Option<Cgroup>,
    /// Absent only when no descriptor could be had (the daemon is out of
    /// them): then the init is not signalled at all (its cgroup, if it
    /// has one, is still killed), rather than signalled by a pid that
    /// may be another process's by then.
    pidfd: Option<OwnedFd>,
    /// The init's start time: a pidfd opened later by pid (`exec`, probes)
    /// is checked against it, in case the init was reaped and its pid reused.
    started: Option<u64>,
    /// That pidfd, once opened and checked: kept for the next probe.
    entered: Option<Arc<OwnedFd>>,
}

impl Live {
    fn signal(&self, signal: NixSignal) -> nix::Result<()> {
        match &self.pidfd {
            Some(pidfd) => crate::sandbox::pidfd_send_signal(pidfd.as_fd(), signal as libc::c_int),
            None => Err(Errno::EBADF),
        }
    }
}

/// What the real executor needs from the daemon's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    /// Where the workloads' cgroups go: `cgroup::workloads_group(state_dir)`.
    pub cgroup_group: String,
    pub volumes_root: PathBuf,
    pub cgroups: Layout,
    pub networks: Arc<Networks>,
    /// Clones the sandboxes, when it could be started (see `sandbox::zygote`);
    /// without it each init is paddock executed again.
    pub zygote: Option<Arc<Zygote>>,
}

/// A start waiting for its network to be attached.
struct Preparing {
    desired: Desired,
    slice: Slice,
    /// A stop or kill came meanwhile: the start is abandoned.
    cancelled: bool,
}

pub struct SandboxExecutor {
    settings: Settings,
    events: mpsc::UnboundedSender<SandboxEvent>,
    live: BTreeMap<WorkloadName, Live>,
    preparing: BTreeMap<WorkloadName, Preparing>,
    /// Workloads' network attachments, made and undone off the event loop.
    attachments: Attachments,
}

impl SandboxExecutor {
    pub fn new(settings: Settings, events: mpsc::UnboundedSender<SandboxEvent>) -> Self {
        let attachments = Attachments::new(settings.networks.clone(), events.clone());
        SandboxExecutor { settings, events, live: BTreeMap::new(), preparing: BTreeMap::new(), attachments }
    }

    /// This host's cgroup layout, as sandboxes get their cgroups in it.
    pub fn cgroups(&self) -> &Layout {
        &self.settings.cgroups
    }

    fn log_path(&self, name: &WorkloadName) -> PathBuf {
        log_path(&self.settings.state_dir, name)
    }
}

/// Where a workload's output is kept.
pub fn log_path(state_dir: &Path, name: &WorkloadName) -> PathBuf {
    state_dir.join("logs").join(format!("{name}.log"))
}

impl Executor for SandboxExecutor {
    fn start(&mut self, request: StartRequest<'_>) -> Result<(), StartFailure> {
        let StartRequest { name, desired, slice } = request;
        match self.attachments.prepare(name, &desired.manifest) {
            Prepared::NoNetwork => self.spawn(request, None),
            Prepared::Ready(a) => self.spawn(request, Some(&a)),
            Prepared::Underway => {
                let start = Preparing { desired: desired.clone(), slice, cancelled: false };
                self.preparing.insert(name.clone(), start);
                Ok(())
            }
        }
    }

    fn attached(
        &mut self,
        name: &WorkloadName,
        outcome: Result<Box<Attachment>, AttachError>,
    ) -> Result<(), StartFailure> {
        let Some(start) = self.preparing.remove(name) else { return Ok(()) };
        let attachment = match outcome {
            Ok(a) => a,
            Err(e) => return Err(StartFailure::new(e.blame, NetworkFailed(e.message))),
        };
        self.attachments.made(name, &attachment);
        if start.cancelled {
            return Err(StartFailure::new(Blame::Workload, NetworkFailed("stopped while its network was made".into())));
        }
        self.spawn(StartRequest { name, desired: &start.desired, slice: start.slice }, Some(&attachment))
    }

    fn release_networks(&mut self, wanted: &dyn Fn(&WorkloadName) -> bool) {
        let (live, preparing) = (&self.live, &self.preparing);
        self.attachments.release(|n| !wanted(n) && !live.contains_key(n) && !preparing.contains_key(n));
    }

    fn network(&self, name: &WorkloadName) -> Option<NetworkView> {
        self.attachments.view(name)
    }

    fn reworded(&mut self, name: &WorkloadName, from: Version, desired: &Desired) {
        if let Some(start) = self.preparing.get_mut(name).filter(|s| s.desired.version == from) {
            start.desired = desired.clone();
        }
        let state_dir = &self.settings.state_dir;
        let Some(mut record) = records::read(state_dir, name).filter(|r| r.version == Some(from)) else { return };
        record.version = Some(desired.version);
        record.source = Some(desired.source.to_string());
        if let Err(e) = records::write(state_dir, name, &record) {
            tracing::warn!(
                workload = %name,
                record = %records::path(state_dir, name).display(),
                error = %e,
                "cannot write the manifest's new text into its sandbox's record: a daemon that adopts the sandbox compares the texts again"
            );
        }
    }

    fn signal(&mut self, name: &WorkloadName, signal: Signal) {
        if let Some(start) = self.preparing.get_mut(name) {
            start.cancelled = true;
        }
        if let Some(live) = self.live.get(name) {
            let signal = NixSignal::try_from(signal.number()).unwrap_or(NixSignal::SIGTERM);
            let _ = live.signal(signal);
        }
    }

    fn kill(&mut self, name: &WorkloadName) {
        if let Some(start) = self.preparing.get_mut(name) {
            start.cancelled = true;
        }
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

    fn probe(&mut self, name: &WorkloadName, pid: i32, m: &Manifest, probe: crate::model::Probe, timeout: Duration) {
        match self.target(name).filter(|t| t.pid == pid) {
            Some(target) => super::probe::start(self.events.clone(), name.clone(), target, m, probe, timeout),
            None => {
                let output = "its sandbox is gone".to_owned();
                let _ = self.events.send(SandboxEvent::Probed { name: name.clone(), pid, ok: false, output });
            }
        }
    }

    fn enter(
        &mut self,
        name: &WorkloadName,
        manifest: &Manifest,
        entry: &crate::sandbox::enter::Entry,
        tty: bool,
        stdio: [OwnedFd; 3],
    ) -> std::io::Result<crate::sandbox::enter::Entered> {
        let target = self.target(name).ok_or_else(|| std::io::Error::other("its sandbox is not running"))?;
        super::probe::enter(name, &target, manifest, entry, tty, stdio, None)
    }
}

impl SandboxExecutor {
    /// A running sandbox, as `exec` and probes enter it.
    fn target(&mut self, name: &WorkloadName) -> Option<super::probe::Target> {
        let live = self.live.get_mut(name)?;
        let cgroup = live.cgroup.as_ref().map(|c| c.dirs().to_vec()).unwrap_or_default();
        let pid = live.pid.as_raw();
        // A pidfd of this init and no other: opened by pid, then the pid
        // checked to be still the init that started then; kept for the next
        // probe (a pidfd of an init that is gone fails its setns, ESRCH).
        let pidfd = match (&live.entered, &live.pidfd) {
            (Some(entered), _) => entered.clone(),
            (None, Some(pidfd)) => Arc::new(pidfd.try_clone().ok()?),
            (None, None) => {
                let pidfd = sandbox::pidfd_open(pid).ok()?;
                Arc::new((live.started.is_some() && process::start_time(pid) == live.started).then_some(pidfd)?)
            }
        };
        live.entered = Some(pidfd.clone());
        Some(super::probe::Target { pid, cgroup, pidfd })
    }
}

impl SandboxExecutor {
    /// Begins a sandbox now, in `attachment`'s network namespace if given.
    fn spawn(&mut self, request: StartRequest<'_>, attachment: Option<&Attachment>) -> Result<(), StartFailure> {
        let StartRequest { name, desired: Desired { version, manifest, source }, slice } = request;
        let (version, manifest) = (*version, &**manifest);
        let state_dir = self.settings.state_dir.clone();
        // Its output, across runs, in STATE_DIR/logs/NAME.log: the init writes it.
        let log = crate::fsutil::create_private_dir(&state_dir.join("logs"))
            .and_then(|()| logline::open_for_run(&self.log_path(name)));
        let log = match log {
            Ok(file) => file,
            Err(e) => {
                let exhausted = e.raw_os_error().is_some_and(|e| sandbox::is_exhausted(Errno::from_raw(e)));
                return Err(StartFailure::new(if exhausted { Blame::Daemon } else { Blame::Workload }, LogFile(e)));
            }
        };
        let netns = match attachment {
            Some(a) => match crate::sandbox::netns::open_ns(&a.netns) {
                Ok(fd) => Some(fd),
                Err(e) => return Err(StartFailure::new(Blame::Daemon, e)),
            },
            None => None,
        };
        let with_files;
        let manifest = match attachment {
            Some(a) => {
                with_files = a.mounted_into(manifest);
                &with_files
            }
            None => manifest,
        };
        let own_files = attachment.map(|a| a.files()).unwrap_or_default();
        // Written before the workload may run anything: a successor daemon
        // finds every sandbox that ever ran, whenever this one dies.
        let record = |cloned: &sandbox::Cloned<'_>| {
            // Without it, no successor could tell the init from another
            // process: the start fails instead.
            let start_time = match process::start_time_checked(cloned.pid.as_raw()) {
                Ok(Some(t)) => t,
                Ok(None) => return Err(std::io::Error::other("the init's start time: no such process")),
                Err(e) => return Err(std::io::Error::other(format!("reading the init's start time: {e}"))),
            };
            let record = Record {
                pid: cloned.pid.as_raw(),
                start_time,
                cgroup: cloned.cgroup.map(|c| c.dirs().to_vec()).unwrap_or_default(),
                slice,
                version: Some(version),
                started: Some(SystemTime::now()),
                boot: records::boot_id(),
                source: Some(source.to_string()),
            };
            records::write(&state_dir, name, &record)
        };
        let begun = Instant::now();
        let spawn = SpawnRequest {
            name,
            manifest,
            slice,
            cgroups: &self.settings.cgroups,
            cgroup_place: Place::workload(&self.settings.cgroup_group, name.as_str()),
            volumes_root: &self.settings.volumes_root,
            own_files: &own_files,
            // Until it is recorded: a daemon that dies takes the half-built sandbox with it.
            die_with_parent: true,
            // Once recorded, it outlives the daemon, which adopts it again.
            supervised: true,
            // Nothing of the daemon's memory (every manifest's environment)
            // in the sandbox's PID 1: the zygote's clone, or a fresh process.
            init: self.settings.zygote.as_deref().map_or(InitMode::Exec, InitMode::Zygote),
            output: Some(log.as_fd()),
            netns: netns.as_ref().map(AsFd::as_fd),
            on_cloned: Some(&record),
        };
        let mut zygote_gone = false;
        let result = match sandbox::begin(&spawn) {
            // A zygote that died is not replaced: inits are executed from now on.
            Err(SpawnError::Zygote(e)) => {
                tracing::warn!(error = %e, "the zygote is gone; sandboxes' inits are executed from now on");
                zygote_gone = true;
                sandbox::begin(&SpawnRequest { init: InitMode::Exec, ..spawn })
            }
            other => other,
        };
        if zygote_gone {
            self.settings.zygote = None;
        }
        let mut pending = match result {
            Ok(p) => p,
            Err(e) => {
                records::remove(&state_dir, name);
                let blame = blame(&e);
                return Err(match e {
                    SpawnError::Record(source) => {
                        StartFailure::new(blame, RecordFailed { path: records::path(&state_dir, name), source })
                    }
                    e => StartFailure::new(blame, e),
                });
            }
        };
        drop(log);
        let started = process::start_time(pending.pid().as_raw());
        // Our unreaped child: a pidfd opened by its pid is its own.
        let pidfd = pending.take_pidfd().or_else(|| sandbox::pidfd_open(pending.pid().as_raw()).ok());
        if pidfd.is_none() {
            tracing::error!(workload = %name, "no pidfd for its init (out of descriptors?): it cannot be signalled");
        }
        self.live.insert(
            name.clone(),
            Live { pid: pending.pid(), cgroup: pending.cgroup().cloned(), pidfd, started, entered: None },
        );
        let listen = Listener { name: name.clone(), state_dir, events: self.events.clone() };
        tokio::spawn(listen.start(pending, begun));
        Ok(())
    }

    /// Takes over the network attachments a predecessor recorded (see
    /// `Attachments::restore`).
    pub fn restore_networks(&mut self) {
        self.attachments.restore();
    }

    /// From now on, attachments no workload wants are undone.
    pub fn release_from_now_on(&mut self) {
        self.attachments.release_from_now_on();
    }

    /// Waits for the attachments and detachments under way (before the
    /// daemon exits or re-executes).
    pub fn settle_networks(&mut self) {
        self.attachments.settle();
    }

    /// Undoes what killed `paddock run`s left of their networks (on a thread).
    pub fn undo_abandoned_runs(&mut self) {
        self.attachments.undo_abandoned_runs();
    }

    /// Undoes every network attachment, once nothing runs, and waits for
    /// it: the daemon's last act before it exits.
    pub fn release_all_networks(&mut self) {
        self.attachments.release_all();
    }

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
                pidfd: match sandbox.pidfd.as_ref().map(|p| p.try_clone()) {
                    Some(Ok(pidfd)) => Some(pidfd),
                    _ => {
                        tracing::error!(workload = %name, "no pidfd for its adopted init: it cannot be signalled");
                        None
                    }
                },
                started: process::start_time(sandbox.pid.as_raw()),
                entered: None,
            },
        );
        let listen =
            Listener { name: name.clone(), state_dir: self.settings.state_dir.clone(), events: self.events.clone() };
        tokio::spawn(listen.running(sandbox, true));
    }
}

/// The workload's network could not be attached.
#[derive(Debug, thiserror::Error)]
#[error("its network: {0}")]
struct NetworkFailed(String);

/// The log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the workload's log: {0}")]
struct LogFile(std::io::Error);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SourceError;
    use nix::sys::signal::kill;

    #[test]
    fn a_host_out_of_processes_descriptors_or_memory_is_the_daemons_failure() {
        for errno in [Errno::EAGAIN, Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM] {
            assert_eq!(blame(&SpawnError::Clone(errno)), Blame::Daemon, "{errno}");
            assert_eq!(blame(&SpawnError::SocketPair(errno)), Blame::Daemon, "{errno}");
        }
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(blame(&SpawnError::Record(full)), Blame::Daemon);
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert_eq!(blame(&SpawnError::Record(quota)), Blame::Daemon);
        for errno in [libc::EROFS, libc::EIO, libc::EACCES] {
            let refused = std::io::Error::from_raw_os_error(errno);
            assert_eq!(blame(&SpawnError::Record(refused)), Blame::Host, "a state directory that refuses the record");
        }
        // What the workload asked for is its own.
        assert_eq!(blame(&SpawnError::Clone(Errno::EINVAL)), Blame::Workload);
        let keyring = |error: &str| SpawnError::Setup { step: sandbox::KEYRING_STEP.to_owned(), error: error.into() };
        assert_eq!(
            blame(&keyring(&format!("{} (raise ...)", Errno::EDQUOT.desc()))),
            Blame::Host,
            "the host's key quota: a reload tries it again once raised"
        );
        assert_eq!(blame(&keyring(Errno::EPERM.desc())), Blame::Host, "keyrings refused");
        // A rootfs the daemon had no descriptor left to open (what CI saw
        // once in daemon_loop's test of a daemon out of descriptors: the
        // workload was marked failed) is the daemon's; a missing one is the host's.
        let rootfs = |errno| SpawnError::Source(SourceError::Rootfs { path: "/".into(), errno });
        assert_eq!(blame(&rootfs(Errno::EMFILE)), Blame::Daemon);
        assert_eq!(blame(&rootfs(Errno::ENOENT)), Blame::Host);
        let mount = SpawnError::Source(SourceError::Mount { path: "/srv".into(), errno: Errno::ENFILE });
        assert_eq!(blame(&mount), Blame::Daemon);
        let big = SpawnError::OutsideSlice { what: "user", id: 70000, size: 65536 };
        assert_eq!(blame(&big), Blame::Host);
        assert_eq!(blame(&SpawnError::NoSetpcap), Blame::Host, "a daemon without CAP_SETPCAP");
    }

    #[test]
    fn a_stop_after_the_init_is_reaped_never_reaches_the_process_given_its_pid() {
        assert!(nix::unistd::geteuid().is_root(), "this test chooses a pid (clone3's set_tid) and must run as root");
        let mut init = std::process::Command::new("/bin/sleep").arg("1000").spawn().unwrap();
        let pid = Pid::from_raw(init.id() as i32);
        let live = Live {
            pid,
            cgroup: None,
            pidfd: Some(sandbox::pidfd_open(pid.as_raw()).unwrap()),
            started: process::start_time(pid.as_raw()),
            entered: None,
        };
        // The init ends and is reaped (as the listener's blocking thread
        // does), and its pid goes to another process before the supervisor
        // hears of it.
        init.kill().unwrap();
        init.wait().unwrap();
        let other = sandbox::child_with_pid(pid.as_raw()).expect("the reaped pid is free for clone3's set_tid");
        // A stop, then a kill, in that window.
        let signalled = [live.signal(NixSignal::SIGTERM), live.signal(NixSignal::SIGKILL)];
        std::thread::sleep(Duration::from_millis(50));
        let alive = nix::sys::wait::waitpid(other, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        let _ = kill(other, NixSignal::SIGKILL);
        let _ = nix::sys::wait::waitpid(other, None);
        assert_eq!(other, pid);
        assert_eq!(signalled, [Err(Errno::ESRCH); 2]);
        assert_eq!(alive, Ok(nix::sys::wait::WaitStatus::StillAlive), "the process given the init's pid was signalled");
        // Without a pidfd, nothing is signalled at all.
        assert_eq!(Live { pidfd: None, ..live }.signal(NixSignal::SIGKILL), Err(Errno::EBADF));
    }
}
