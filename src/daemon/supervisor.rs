//! The supervisor: keeps the workloads directory true. Events (file
//! changes, exits, timers, signals, control requests) arrive on one
//! channel; each ends in a rescan and/or a reconcile, where the pure
//! `plan` decides and `execute` only carries its actions out.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal as NixSignal;
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::logs::RotatingLog;
use super::notify::Notifier;
use super::records::{self, Record};
use super::scan::{self, Found, Snapshot};
use super::status::{IdMap, Request, Response, WorkloadStatus};
use crate::idmap::{Allocations, Isolation, RemapRanges, Slice};
use crate::model::{Restart, Signal, Stop, WorkloadName};
use crate::reconcile::{Action, ExitKind, Observed, Version, plan};
use crate::sandbox::cgroup::{Cgroup, Layout};
use crate::sandbox::{self, Exit, InitMode, Sandbox, SpawnRequest, process};
use crate::validate::{Color, HostChecks, Validator, WorkloadSpec, render};

/// Everything the supervisor is told at start.
pub struct Settings {
    pub workloads: PathBuf,
    pub state_dir: PathBuf,
    pub volumes_root: PathBuf,
    pub cgroups: Layout,
    pub ranges: RemapRanges,
    pub isolation: Isolation,
    pub slice_size: u32,
    pub resync_interval: Duration,
}

#[derive(Debug)]
pub enum Event {
    /// Something changed in the workloads directory (or its parent).
    Changed,
    /// Carry on with a plan that was cut short (see `STARTS_PER_PASS`).
    Reconcile,
    Exited {
        name: WorkloadName,
        pid: Pid,
    },
    StopTimeout {
        name: WorkloadName,
        pid: Pid,
    },
}

/// The last valid version of a manifest (it keeps running while a newer
/// version of the file is invalid).
struct Desired {
    version: Version,
    spec: WorkloadSpec,
}

/// A sandbox that exists, with what it was started from.
struct Live {
    sandbox: Sandbox,
    restart: Restart,
    stop: Stop,
    started: Instant,
}

#[derive(Default)]
struct History {
    /// The id slice it was given (kept here so `status` reads no file).
    slice: Option<Slice>,
    restarts: u32,
    last_exit: Option<ExitKind>,
    start_error: Option<String>,
}

pub struct Supervisor {
    settings: Settings,
    validator: Validator,
    notifier: Notifier,
    events: mpsc::UnboundedSender<Event>,
    snapshot: Snapshot,
    desired: BTreeMap<WorkloadName, Desired>,
    /// Validation problems by file name (shown as the workload's error).
    invalid: BTreeMap<String, String>,
    observed: BTreeMap<WorkloadName, Observed>,
    live: BTreeMap<WorkloadName, Live>,
    history: BTreeMap<WorkloadName, History>,
    wake_at: Option<Instant>,
    seed: u64,
    /// One daemon per state directory (see `records::lock`).
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Sandboxes started in one reconcile pass before other events are heard.
const STARTS_PER_PASS: usize = 16;

/// Largest log file before it is rotated, and how many old ones are kept.
const LOG_MAX_BYTES: u64 = 10 << 20;
const LOG_KEEP: usize = 3;

/// Copies a sandbox's output into its log until the sandbox closes it.
/// The buffer lives only between a readiness and its read, never across an
/// await, so an idle sandbox costs the daemon no buffer (1000 idle
/// sandboxes with a 64 KiB buffer each were 64 MiB of RSS).
async fn copy_to_log(read: OwnedFd, path: PathBuf) {
    let (pipe, mut log) = match (
        tokio::net::unix::pipe::Receiver::from_owned_fd(read),
        RotatingLog::open(&path, LOG_MAX_BYTES, LOG_KEEP),
    ) {
        (Ok(pipe), Ok(log)) => (pipe, log),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(log = %path.display(), error = %e, "cannot capture the output");
            return;
        }
    };
    loop {
        if let Err(e) = pipe.readable().await {
            tracing::error!(log = %path.display(), error = %e, "reading the output");
            return;
        }
        let mut buf = [0u8; 16 << 10];
        match pipe.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = log.write(&buf[..n]) {
                    tracing::error!(log = %path.display(), error = %e, "cannot write the log");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::error!(log = %path.display(), error = %e, "reading the output");
                return;
            }
        }
    }
}

fn exit_kind(exit: Exit) -> ExitKind {
    match exit {
        Exit::Code(c) => ExitKind::Code(c),
        Exit::Signal(s) => ExitKind::Signal(s),
        Exit::OomKilled => ExitKind::OomKilled,
    }
}

impl Supervisor {
    pub fn new(
        settings: Settings,
        validator: Validator,
        notifier: Notifier,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        // Different daemons (and restarts) must not jitter alike: seed from the wall clock.
        let clock =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        let seed = clock ^ u64::from(std::process::id()) | 1;
        Self {
            settings,
            validator,
            notifier,
            events,
            snapshot: Snapshot::new(),
            desired: BTreeMap::new(),
            invalid: BTreeMap::new(),
            observed: BTreeMap::new(),
            live: BTreeMap::new(),
            history: BTreeMap::new(),
            wake_at: None,
            seed,
            _lock: None,
        }
    }

    pub fn wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    /// xorshift: a little jitter for restart delays, no dependency.
    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % 1_000_000) as f64 / 1_000_000.0
    }

    /// Before anything starts: stops what a daemon that died left running
    /// (from the sandbox records), and repairs a lost id table.
    pub fn recover(&mut self) -> std::io::Result<()> {
        self._lock = Some(records::lock(&self.settings.state_dir)?);
        let found = records::recover(&self.settings.state_dir, &self.settings.cgroups);
        records::repair_allocations(&self.settings.state_dir, &found.slices);
        if !found.stopped.is_empty() {
            tracing::warn!(workloads = ?found.stopped, "stopped the sandboxes of a daemon that died; they start anew");
        }
        Ok(())
    }

    /// Scans the directory and re-validates the files whose content changed.
    pub fn rescan(&mut self, why: &str) {
        // The periodic resync reads every file; other rescans trust unchanged stamps.
        let previous = (why != "resync").then_some(&self.snapshot);
        let snapshot = match scan::scan(&self.settings.workloads, previous) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(dir = %self.settings.workloads.display(), error = %e, "cannot scan the workloads directory");
                return;
            }
        };
        let changed: Vec<String> = scan::changed(&self.snapshot, &snapshot).into_iter().map(str::to_owned).collect();
        tracing::debug!(why, changed = changed.len(), "rescan");
        for file in changed {
            self.apply_file(&file, snapshot.get(&file));
        }
        self.snapshot = snapshot;
    }

    fn apply_file(&mut self, file: &str, found: Option<&Found>) {
        let stem = file.strip_suffix(".toml").unwrap_or(file);
        let name = WorkloadName::try_from(stem).ok();
        let path = self.settings.workloads.join(file);
        match found {
            None => {
                tracing::info!(file, "manifest removed");
                self.invalid.remove(file);
                if let Some(name) = name {
                    self.desired.remove(&name);
                }
            }
            Some(Found::Refused { message }) => {
                tracing::error!(file, error = %message, "manifest refused; the last valid version keeps running");
                self.invalid.insert(file.to_owned(), message.clone());
            }
            Some(Found::Read { text, version, .. }) => {
                let checked = self.validator.validate(file, text, HostChecks::Require);
                match checked.spec {
                    Some(spec) => {
                        self.invalid.remove(file);
                        let name = spec.name.clone();
                        let changed = self.desired.get(&name).is_none_or(|d| d.version != *version);
                        if changed {
                            let history = self.history.entry(name.clone()).or_default();
                            history.restarts = 0;
                            history.start_error = None;
                        }
                        self.desired.insert(name, Desired { version: *version, spec });
                    }
                    None => {
                        let shown = path.display().to_string();
                        let text: String =
                            checked.problems.iter().map(|p| render(p, &shown, text, Color::Never)).collect();
                        tracing::error!(file, "invalid manifest; the last valid version keeps running\n{text}");
                        self.invalid.insert(file.to_owned(), text.trim_end().to_owned());
                    }
                }
            }
        }
    }

    /// Plans and carries the plan out. A start takes milliseconds, so at
    /// most `STARTS_PER_PASS` are made before the loop answers other events
    /// (status requests, exits); the rest follow in the next pass.
    pub fn reconcile(&mut self) {
        let now = Instant::now();
        let desired: BTreeMap<WorkloadName, Version> =
            self.desired.iter().map(|(n, d)| (n.clone(), d.version)).collect();
        let p = plan(&desired, &self.observed, now);
        let (starts, others): (Vec<Action>, Vec<Action>) =
            p.actions.into_iter().partition(|a| matches!(a, Action::Start { .. }));
        for action in others {
            self.execute(action, now, None);
        }
        if starts.len() > STARTS_PER_PASS {
            let _ = self.events.send(Event::Reconcile);
        }
        let starts: Vec<Action> = starts.into_iter().take(STARTS_PER_PASS).collect();
        // One locked, fsynced write of the id table for the whole pass.
        let names: Vec<&WorkloadName> = starts.iter().map(Action::name).collect();
        let mut slices = self.slices(&names);
        for action in starts {
            let slice = slices.remove(action.name());
            self.execute(action, now, slice);
        }
        // A start that failed at once is in backoff now: plan once more for its timer.
        let desired: BTreeMap<WorkloadName, Version> =
            self.desired.iter().map(|(n, d)| (n.clone(), d.version)).collect();
        self.wake_at = plan(&desired, &self.observed, now).wake_at;
        let _ = self.notifier.notify(&format!("STATUS={}", self.summary()));
    }

    fn execute(&mut self, action: Action, now: Instant, slice: Option<Result<Slice, String>>) {
        let name = action.name().clone();
        let span = tracing::info_span!("reconcile", workload = %name, action = ?std::mem::discriminant(&action));
        let _enter = span.enter();
        match action {
            Action::Start { version, reason, .. } => {
                tracing::info!(?reason, "start");
                if matches!(self.observed.get(&name), Some(Observed::Backoff { .. })) {
                    self.history.entry(name.clone()).or_default().restarts += 1;
                }
                let slice = slice.unwrap_or_else(|| Err("no id slice was allocated".to_owned()));
                self.start(&name, version, now, slice);
            }
            Action::Restart { reason, .. } | Action::Stop { reason, .. } => {
                tracing::info!(?reason, "stop");
                self.stop(&name);
            }
            Action::Forget { .. } => {
                tracing::info!("forget");
                self.observed.remove(&name);
                self.history.remove(&name);
                self.free_slice(&name);
            }
        }
    }

    /// The slices of the workloads about to start, in one update of the table.
    fn slices(&self, names: &[&WorkloadName]) -> BTreeMap<WorkloadName, Result<Slice, String>> {
        let s = &self.settings;
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return out;
        }
        let result = Allocations::update(&s.state_dir, |t| {
            for name in names {
                let slice = t.allocate(name.as_str(), &s.ranges.uids, &s.ranges.gids, s.slice_size, s.isolation);
                out.insert((*name).clone(), slice.map_err(|e| e.to_string()));
            }
            Ok(())
        });
        if let Err(e) = result {
            for name in names {
                out.insert((*name).clone(), Err(e.to_string()));
            }
        }
        out
    }

    fn free_slice(&self, name: &WorkloadName) {
        if let Err(e) = Allocations::update(&self.settings.state_dir, |t| Ok(t.free(name.as_str()))) {
            tracing::error!(workload = %name, error = %e, "cannot free the id slice");
        }
    }

    fn start(&mut self, name: &WorkloadName, version: Version, now: Instant, slice: Result<Slice, String>) {
        let failures = match self.observed.get(name) {
            Some(Observed::Backoff { failures, version: v, .. }) if *v == version => *failures,
            _ => 0,
        };
        let Some(desired) = self.desired.get(name) else { return };
        let manifest = desired.spec.manifest.clone();
        // Its output, across runs, in STATE_DIR/logs/NAME.log.
        let pipe = self.log_pipe(name);
        let output = pipe.as_ref().map(|(_, write)| write.as_fd());
        if let Ok(slice) = &slice {
            self.history.entry(name.clone()).or_default().slice = Some(*slice);
        }
        // Never two sandboxes of one workload: a cgroup of its name that still
        // holds processes (left by a daemon that died without a record) is emptied.
        if let Some(cgroup) = Cgroup::existing(&self.settings.cgroups, name.as_str()).filter(Cgroup::occupied) {
            tracing::warn!("its cgroup still holds processes of an earlier sandbox: killing them");
            cgroup.kill_all(Duration::from_secs(5));
        }
        let started = slice.and_then(|slice| {
            let request = SpawnRequest {
                name,
                manifest: &manifest,
                slice,
                cgroups: &self.settings.cgroups,
                volumes_root: &self.settings.volumes_root,
                // A daemon that dies takes its sandboxes with it: no orphans.
                die_with_parent: true,
                // The daemon has threads (the watcher's): re-execute for the init.
                init: InitMode::Exec,
                output,
            };
            sandbox::spawn(&request).map_err(|e| e.to_string())
        });
        // Our copy of the write end must go, so the log copier sees the end.
        let pipe = pipe.map(|(read, write)| {
            drop(write);
            read
        });
        match started {
            Ok(sandbox) => {
                self.record(name, &sandbox);
                if let Some(read) = pipe {
                    tokio::spawn(copy_to_log(read, self.log_path(name)));
                }
                self.watch_exit(name.clone(), &sandbox);
                self.history.entry(name.clone()).or_default().start_error = None;
                self.observed.insert(name.clone(), Observed::Running { version, since: now, failures });
                self.live.insert(
                    name.clone(),
                    Live { sandbox, restart: manifest.restart.clone(), stop: manifest.stop.clone(), started: now },
                );
            }
            Err(error) => {
                tracing::error!(%error, "start failed");
                self.history.entry(name.clone()).or_default().start_error = Some(error);
                let jitter = self.jitter();
                let starting = Observed::Starting { version, failures };
                match starting.exited(ExitKind::Code(125), now, &manifest.restart, jitter) {
                    Ok(state) => {
                        self.observed.insert(name.clone(), state);
                    }
                    Err(e) => tracing::error!(error = %e, "unexpected state after a failed start"),
                }
            }
        }
    }

    /// Writes the sandbox's record, which a successor daemon reads if this one dies.
    fn record(&self, name: &WorkloadName, sandbox: &Sandbox) {
        let Some(slice) = self.history.get(name).and_then(|h| h.slice) else { return };
        let record = Record {
            pid: sandbox.pid.as_raw(),
            start_time: process::start_time(sandbox.pid.as_raw()).unwrap_or(0),
            cgroup: sandbox.cgroup.as_ref().map(|c| c.dirs().to_vec()).unwrap_or_default(),
            slice,
        };
        if let Err(e) = records::write(&self.settings.state_dir, name, &record) {
            tracing::error!(error = %e, "cannot write the sandbox record; a successor daemon would rely on its cgroup alone");
        }
    }

    fn log_path(&self, name: &WorkloadName) -> PathBuf {
        self.settings.state_dir.join("logs").join(format!("{name}.log"))
    }

    fn log_pipe(&self, name: &WorkloadName) -> Option<(OwnedFd, OwnedFd)> {
        let dir = self.settings.state_dir.join("logs");
        let made = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir);
        match made.and_then(|()| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)) {
            Ok(pipe) => Some(pipe),
            Err(e) => {
                tracing::error!(workload = %name, error = %e, "cannot capture the output; it goes to the daemon's stderr");
                None
            }
        }
    }

    /// A task that waits on the sandbox's pidfd and reports its exit.
    fn watch_exit(&self, name: WorkloadName, sandbox: &Sandbox) {
        let pid = sandbox.pid;
        let events = self.events.clone();
        let fd = match sandbox.pidfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!(workload = %name, error = %e, "cannot watch the sandbox");
                return;
            }
        };
        tokio::spawn(async move {
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open
            // and refers to the same pidfd for the AsyncFd's whole life.
            if let Ok(afd) =
                unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            {
                let _ = afd.readable().await;
            }
            let _ = events.send(Event::Exited { name, pid });
        });
    }

    fn stop(&mut self, name: &WorkloadName) {
        let Some(live) = self.live.get(name) else {
            self.observed.remove(name);
            return;
        };
        let version = self.observed.get(name).map(Observed::version).unwrap_or(Version(0));
        self.observed.insert(name.clone(), Observed::Stopping { version });
        let signal = NixSignal::try_from(live.stop.signal.number()).unwrap_or(NixSignal::SIGTERM);
        let _ = live.sandbox.signal(signal);
        let (events, name, pid, timeout) =
            (self.events.clone(), name.clone(), live.sandbox.pid, live.stop.timeout.as_std());
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = events.send(Event::StopTimeout { name, pid });
        });
    }

    pub fn stop_timeout(&mut self, name: &WorkloadName, pid: Pid) {
        if let Some(live) = self.live.get(name).filter(|l| l.sandbox.pid == pid) {
            tracing::warn!(workload = %name, "stop timeout: killing every process of the sandbox");
            // The init is PID 1 of the sandbox's pid namespace: its death kills
            // the rest. A sandbox in the host's pid namespace is killed through its cgroup.
            let _ = live.sandbox.signal(NixSignal::SIGKILL);
            if let Some(cgroup) = &live.sandbox.cgroup {
                cgroup.kill_all(Duration::ZERO);
            }
        }
    }

    pub fn exited(&mut self, name: &WorkloadName, pid: Pid) {
        let Some(live) = self.live.remove(name) else { return };
        if live.sandbox.pid != pid {
            self.live.insert(name.clone(), live);
            return;
        }
        let (restart, started) = (live.restart.clone(), live.started);
        let exit = exit_kind(live.sandbox.wait());
        records::remove(&self.settings.state_dir, name);
        tracing::info!(workload = %name, ?exit, ran_for = ?started.elapsed(), "exited");
        self.history.entry(name.clone()).or_default().last_exit = Some(exit);
        let now = Instant::now();
        match self.observed.remove(name) {
            // Stopped because its manifest is gone: its ids go back to the pool.
            Some(Observed::Stopping { .. }) if !self.desired.contains_key(name) => {
                self.history.remove(name);
                self.free_slice(name);
            }
            // Stopped to be replaced: the next plan starts the new version.
            Some(Observed::Stopping { .. }) => {}
            Some(state) => {
                let jitter = self.jitter();
                match state.exited(exit, now, &restart, jitter) {
                    Ok(next) => {
                        self.observed.insert(name.clone(), next);
                    }
                    Err(e) => tracing::error!(workload = %name, error = %e, "unexpected exit"),
                }
            }
            None => {}
        }
    }

    /// Stops every sandbox (stop signal, timeout, kill) and waits for them.
    pub fn begin_shutdown(&mut self) {
        let _ = self.notifier.notify("STOPPING=1");
        self.desired.clear();
        let names: Vec<WorkloadName> = self.live.keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
    }

    pub fn all_stopped(&self) -> bool {
        self.live.is_empty()
    }

    fn summary(&self) -> String {
        let count = |state: &str| self.observed.values().filter(|o| o.name() == state).count();
        format!("{} running, {} failed, {} invalid", count("running"), count("failed"), self.invalid.len())
    }

    pub fn ready(&self) {
        let _ = self.notifier.notify(&format!("READY=1\nSTATUS={}", self.summary()));
    }

    pub fn notify(&self, message: &str) {
        let _ = self.notifier.notify(message);
    }

    pub fn answer(&self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(self.status()),
        }
    }

    fn status(&self) -> Vec<WorkloadStatus> {
        let mut names: Vec<WorkloadName> = self.desired.keys().chain(self.observed.keys()).cloned().collect();
        names.extend(
            self.invalid.keys().filter_map(|f| WorkloadName::try_from(f.strip_suffix(".toml").unwrap_or(f)).ok()),
        );
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let file = format!("{name}.toml");
                let history = self.history.get(&name);
                let slice = history.and_then(|h| h.slice.as_ref());
                let live = self.live.get(&name);
                WorkloadStatus {
                    state: self.observed.get(&name).map_or("stopped", Observed::name).to_owned(),
                    pid: live.map(|l| l.sandbox.pid.as_raw()),
                    uid_map: slice.map(|s| IdMap { host_start: s.uid.start, size: s.uid.count }),
                    gid_map: slice.map(|s| IdMap { host_start: s.gid.start, size: s.gid.count }),
                    restarts: history.map_or(0, |h| h.restarts),
                    last_exit: history.and_then(|h| h.last_exit).map(|e| match e {
                        ExitKind::Code(c) => serde_json::Value::from(c),
                        ExitKind::Signal(s) => serde_json::Value::from(
                            Signal::from_number(s).map_or_else(|| s.to_string(), |s| s.to_string()),
                        ),
                        ExitKind::OomKilled => serde_json::Value::from("oom-killed"),
                    }),
                    error: self.invalid.get(&file).cloned().or_else(|| history.and_then(|h| h.start_error.clone())),
                    uptime_seconds: live
                        .filter(|_| matches!(self.observed.get(&name), Some(Observed::Running { .. })))
                        .map(|l| l.started.elapsed().as_secs()),
                    manifest: self.settings.workloads.join(&file).display().to_string(),
                    name: name.to_string(),
                }
            })
            .collect()
    }
}
