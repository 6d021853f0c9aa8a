//! The supervisor: keeps the workloads directory true. Events (file
//! changes, exits, timers, signals, control requests) arrive on one
//! channel; each ends in a rescan and/or a reconcile, where the pure
//! `plan` decides and `execute` only carries its actions out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal as NixSignal;
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::logs::{LOG_KEEP, LOG_MAX_BYTES, RotatingLog, Stamper};
use super::notify::Notifier;
use super::records::{self, Record};
use super::scan::{self, Found, Snapshot};
use super::status::{Change, IdMap, Report, Request, Response, WorkloadDetail, WorkloadStatus};
use crate::idmap::{Allocations, Isolation, RemapRanges, Slice};
use crate::model::{Manifest, Restart, Signal, Stop, WorkloadName};
use crate::reconcile::{Action, ExitKind, Observed, Reason, Version, plan};
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

/// A start that was begun and awaits its init's report.
struct Starting {
    name: WorkloadName,
    version: Version,
    /// The reconcile that decided it.
    now: Instant,
    begun: Instant,
    failures: u32,
    manifest: Manifest,
    log: Option<OwnedFd>,
    pending: Result<sandbox::Pending, String>,
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
    /// Its recent state changes, newest last (at most `CHANGES_KEPT`).
    changes: VecDeque<Change>,
    /// How long its last start took (spawn to the workload's exec).
    start_latency: Option<Duration>,
}

/// State changes kept per workload for `paddock status NAME`.
const CHANGES_KEPT: usize = 20;

/// The daemon's own figures, for the metrics.
#[derive(Default)]
struct Stats {
    reconciles: u64,
    reconcile_seconds: f64,
    last_reconcile_seconds: f64,
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
    /// Held stopped by `paddock stop`, with the manifest version it was
    /// held at: another version releases it (persisted in STATE_DIR/held.json).
    held: BTreeMap<WorkloadName, Version>,
    /// Why a workload's next start or restart happens ("command changed"),
    /// set when its manifest changes and taken by the action.
    why: BTreeMap<WorkloadName, String>,
    stats: Stats,
    /// One daemon per state directory (see `records::lock`).
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Sandboxes started in one reconcile pass before other events are heard.
pub const STARTS_PER_PASS: usize = 16;

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
    let mut stamper = Stamper::default();
    let write = |log: &mut RotatingLog, bytes: &[u8]| {
        if let Err(e) = log.write(bytes) {
            tracing::error!(log = %path.display(), error = %e, "cannot write the log");
        }
    };
    loop {
        if let Err(e) = pipe.readable().await {
            tracing::error!(log = %path.display(), error = %e, "reading the output");
            return;
        }
        let mut buf = [0u8; 16 << 10];
        match pipe.try_read(&mut buf) {
            Ok(0) => {
                let mut out = Vec::new();
                stamper.finish(&mut out);
                write(&mut log, &out);
                return;
            }
            Ok(n) => {
                let mut out = Vec::with_capacity(n + 64);
                stamper.stamp(&buf[..n], std::time::SystemTime::now(), &mut out);
                write(&mut log, &out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::error!(log = %path.display(), error = %e, "reading the output");
                return;
            }
        }
    }
}

/// An exit as a person reads it: "code 3", "SIGKILL", "oom-killed".
fn exit_text(exit: ExitKind) -> String {
    match exit {
        ExitKind::Code(c) => format!("code {c}"),
        _ => exit_name(exit),
    }
}

/// What `status` shows of an exit that is not a code: "SIGKILL", "oom-killed".
fn exit_name(exit: ExitKind) -> String {
    match exit {
        ExitKind::Code(c) => c.to_string(),
        ExitKind::Signal(s) => Signal::from_number(s).map_or_else(|| format!("signal {s}"), |s| s.to_string()),
        ExitKind::OomKilled => "oom-killed".to_owned(),
    }
}

/// The top-level manifest keys that differ: "command changed",
/// "command and env changed", "env, mounts and resources changed".
fn changed_keys(old: &Manifest, new: &Manifest) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return "manifest changed".to_owned();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differ: Vec<&str> = keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(String::as_str).collect();
    match differ.as_slice() {
        [] => "manifest changed (formatting or comments only)".to_owned(),
        [one] => format!("{one} changed"),
        [rest @ .., last] => format!("{} and {last} changed", rest.join(", ")),
    }
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// An action as `reload` and `plan` show it: "start web", "restart worker
/// (command changed)"; `why` says why a manifest's workload (re)starts.
/// None for internal bookkeeping.
fn describe(action: &Action, why: impl Fn(&WorkloadName) -> String) -> Option<String> {
    Some(match action {
        Action::Start { name, reason: Reason::New, .. } => format!("start {name}"),
        Action::Start { name, reason: Reason::BackoffElapsed, .. } => {
            format!("retry {name} (its restart delay is over)")
        }
        Action::Start { name, .. } => format!("start {name} ({})", why(name)),
        Action::Restart { name, .. } => format!("restart {name} ({})", why(name)),
        Action::Stop { name, .. } => format!("stop {name} (manifest removed)"),
        Action::Forget { .. } => return None,
    })
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
            held: BTreeMap::new(),
            why: BTreeMap::new(),
            stats: Stats::default(),
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
        self.held = self.load_held();
        // The planner leaves a held workload alone until its manifest changes.
        for (name, version) in &self.held {
            self.observed.insert(name.clone(), Observed::Held { version: *version });
        }
        Ok(())
    }

    fn held_path(&self) -> PathBuf {
        self.settings.state_dir.join("held.json")
    }

    /// Workloads an operator stopped stay stopped across daemon restarts.
    fn load_held(&self) -> BTreeMap<WorkloadName, Version> {
        let path = self.held_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<BTreeMap<String, u64>>(&bytes)
                .map(|held| {
                    held.into_iter().filter_map(|(n, v)| Some((WorkloadName::try_from(n.as_str()).ok()?, Version(v)))).collect()
                })
                .unwrap_or_else(|e| {
                    tracing::error!(file = %path.display(), error = %e, "unreadable list of held workloads; none is held");
                    BTreeMap::new()
                }),
            Err(_) => BTreeMap::new(),
        }
    }

    fn save_held(&self) {
        let held: BTreeMap<&str, u64> = self.held.iter().map(|(n, v)| (n.as_str(), v.0)).collect();
        let result = serde_json::to_vec(&held)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::fsutil::write_atomic(&self.held_path(), &json, 0o600));
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot save the list of held workloads");
        }
    }

    /// Records a state change for `paddock status NAME`.
    fn note(&mut self, name: &WorkloadName, event: impl Into<String>) {
        let changes = &mut self.history.entry(name.clone()).or_default().changes;
        if changes.len() == CHANGES_KEPT {
            changes.pop_front();
        }
        changes.push_back(Change { time: crate::timefmt::rfc3339(SystemTime::now()), event: event.into() });
    }

    /// What the plan works toward: the valid manifests.
    fn desired_versions(&self) -> BTreeMap<WorkloadName, Version> {
        self.desired.iter().map(|(n, d)| (n.clone(), d.version)).collect()
    }

    /// Scans the directory and re-validates the files whose content changed.
    /// Returns the problems of the files found invalid in this rescan.
    pub fn rescan(&mut self, why: &str) -> Vec<String> {
        // The periodic resync reads every file; other rescans trust unchanged stamps.
        let previous = (why != "resync").then_some(&self.snapshot);
        let snapshot = match scan::scan(&self.settings.workloads, previous) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(dir = %self.settings.workloads.display(), error = %e, "cannot scan the workloads directory");
                return Vec::new();
            }
        };
        let changed: Vec<String> = scan::changed(&self.snapshot, &snapshot).into_iter().map(str::to_owned).collect();
        tracing::debug!(why, changed = changed.len(), "rescan");
        for file in &changed {
            self.apply_file(file, snapshot.get(file));
        }
        self.snapshot = snapshot;
        changed.iter().filter_map(|f| self.invalid.get(f).cloned()).collect()
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
                self.invalid.insert(file.to_owned(), format!("{}: {message}", path.display()));
                if let Some(name) = &name {
                    self.note(name, "manifest refused; the last valid version stays");
                }
            }
            Some(Found::Read { text, version, .. }) => {
                let checked = self.validator.validate(file, text, HostChecks::Require);
                match checked.spec {
                    Some(spec) => {
                        self.invalid.remove(file);
                        let name = spec.name.clone();
                        let before = self.desired.get(&name);
                        let changed = before.is_none_or(|d| d.version != *version);
                        if changed {
                            if let Some(before) = before {
                                let why = changed_keys(&before.spec.manifest, &spec.manifest);
                                self.why.insert(name.clone(), why);
                            }
                            let history = self.history.entry(name.clone()).or_default();
                            history.restarts = 0;
                            history.start_error = None;
                            // Another manifest releases a workload held by `paddock stop`.
                            if self.held.get(&name).is_some_and(|v| v != version) {
                                self.held.remove(&name);
                                self.save_held();
                            }
                            self.note(&name, if before.is_some() { "manifest changed" } else { "manifest added" });
                        }
                        self.desired.insert(name, Desired { version: *version, spec });
                    }
                    None => {
                        let shown = path.display().to_string();
                        let text: String =
                            checked.problems.iter().map(|p| render(p, &shown, text, Color::Never)).collect();
                        tracing::error!(file, "invalid manifest; the last valid version keeps running\n{text}");
                        self.invalid.insert(file.to_owned(), text.trim_end().to_owned());
                        if let Some(name) = &name {
                            self.note(name, "manifest invalid; the last valid version stays");
                        }
                    }
                }
            }
        }
    }

    /// Plans and carries the plan out. A start takes milliseconds, so at
    /// most `STARTS_PER_PASS` are made before the loop answers other events
    /// (status requests, exits); the rest follow in the next pass.
    pub fn reconcile(&mut self) -> Report {
        let now = Instant::now();
        let p = plan(&self.desired_versions(), &self.observed, now);
        let (starts, others): (Vec<Action>, Vec<Action>) =
            p.actions.into_iter().partition(|a| matches!(a, Action::Start { .. }));
        let mut report = Report::default();
        for action in others {
            report.actions.extend(self.describe(&action));
            let none = self.execute(action, now, None);
            debug_assert!(none.is_none(), "only starts begin a start");
        }
        report.queued = starts.len().saturating_sub(STARTS_PER_PASS);
        if report.queued > 0 {
            let _ = self.events.send(Event::Reconcile);
        }
        let starts: Vec<Action> = starts.into_iter().take(STARTS_PER_PASS).collect();
        // One locked, fsynced write of the id table for the whole pass.
        let names: Vec<&WorkloadName> = starts.iter().map(Action::name).collect();
        let mut slices = self.slices(&names);
        // Begun together, finished together: the inits set up in parallel.
        let mut begun = Vec::with_capacity(starts.len());
        for action in starts {
            report.actions.extend(self.describe(&action));
            let slice = slices.remove(action.name());
            begun.extend(self.execute(action, now, slice));
        }
        for starting in begun {
            self.finish_start(starting);
        }
        // A start that failed at once is in backoff now: plan once more for its timer.
        self.wake_at = plan(&self.desired_versions(), &self.observed, now).wake_at;
        let _ = self.notifier.notify(&format!("STATUS={}", self.summary()));
        let took = now.elapsed().as_secs_f64();
        self.stats.reconciles += 1;
        self.stats.reconcile_seconds += took;
        self.stats.last_reconcile_seconds = took;
        report
    }

    fn describe(&self, action: &Action) -> Option<String> {
        describe(action, |name| self.why.get(name).map_or("manifest changed".to_owned(), Clone::clone))
    }

    /// Carries out one action; a start is only begun, and returned to be finished.
    fn execute(&mut self, action: Action, now: Instant, slice: Option<Result<Slice, String>>) -> Option<Starting> {
        let name = action.name().clone();
        let span = tracing::info_span!("reconcile", workload = %name, action = action.kind());
        let _enter = span.enter();
        match action {
            Action::Start { version, reason, .. } => {
                tracing::info!(?reason, "start");
                self.why.remove(&name);
                if matches!(self.observed.get(&name), Some(Observed::Backoff { .. })) {
                    self.history.entry(name.clone()).or_default().restarts += 1;
                }
                let slice = slice.unwrap_or_else(|| Err("no id slice was allocated".to_owned()));
                return self.begin_start(&name, version, now, slice);
            }
            Action::Restart { reason, .. } | Action::Stop { reason, .. } => {
                tracing::info!(?reason, "stop");
                self.stop(&name);
            }
            Action::Forget { .. } => {
                tracing::info!("forget");
                self.observed.remove(&name);
                // Its manifest is gone, and with it any hold.
                if self.held.remove(&name).is_some() {
                    self.save_held();
                }
                self.history.remove(&name);
                self.free_slice(&name);
            }
        }
        None
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

    /// Begins a start: the sandbox is cloned and configured, and its init
    /// builds the root while the daemon begins the next (see `finish_start`).
    fn begin_start(
        &mut self,
        name: &WorkloadName,
        version: Version,
        now: Instant,
        slice: Result<Slice, String>,
    ) -> Option<Starting> {
        let failures = match self.observed.get(name) {
            Some(Observed::Backoff { failures, version: v, .. }) if *v == version => *failures,
            _ => 0,
        };
        let desired = self.desired.get(name)?;
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
        let begun = Instant::now();
        let state_dir = &self.settings.state_dir;
        let pending = slice.and_then(|slice| {
            // Written before the sandbox may run anything: a successor daemon
            // finds every sandbox that ever ran, whenever this one dies.
            let record = |cloned: &sandbox::Cloned<'_>| {
                let record = Record {
                    pid: cloned.pid.as_raw(),
                    start_time: process::start_time(cloned.pid.as_raw()).unwrap_or(0),
                    cgroup: cloned.cgroup.map(|c| c.dirs().to_vec()).unwrap_or_default(),
                    slice,
                };
                records::write(state_dir, name, &record)
            };
            let request = SpawnRequest {
                name,
                manifest: &manifest,
                slice,
                cgroups: &self.settings.cgroups,
                volumes_root: &self.settings.volumes_root,
                // A daemon that dies takes its sandboxes with it: no orphans.
                die_with_parent: true,
                // A fresh process for the init, with nothing of the daemon's
                // memory (every manifest's environment) in the sandbox's PID 1.
                // Running it in the clone child (the daemon is single-threaded)
                // measured no faster: copy-on-write costs what the exec saves.
                init: InitMode::Exec,
                output,
                on_cloned: Some(&record),
            };
            sandbox::begin(&request).map_err(|e| e.to_string())
        });
        // Our copy of the write end must go, so the log copier sees the end.
        let log = pipe.map(|(read, write)| {
            drop(write);
            read
        });
        Some(Starting { name: name.clone(), version, now, begun, failures, manifest, log, pending })
    }

    /// Waits for a begun start's report and records the outcome.
    fn finish_start(&mut self, s: Starting) {
        let Starting { name, version, now, begun, failures, manifest, log, pending } = s;
        let span = tracing::info_span!("reconcile", workload = %name, action = "start");
        let _enter = span.enter();
        let started = pending.and_then(|p| p.finish().map_err(|e| e.to_string()));
        let name = &name;
        match started {
            Ok(sandbox) => {
                let latency = begun.elapsed();
                tracing::info!(pid = sandbox.pid.as_raw(), latency = ?latency, "started");
                self.history.entry(name.clone()).or_default().start_latency = Some(latency);
                self.note(name, format!("started (pid {})", sandbox.pid));
                if let Some(read) = log {
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
                // Nothing of the sandbox is left (`Pending` saw to it): neither is its record.
                records::remove(&self.settings.state_dir, name);
                tracing::error!(%error, "start failed");
                self.note(name, format!("start failed: {error}"));
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

    fn log_path(&self, name: &WorkloadName) -> PathBuf {
        self.settings.state_dir.join("logs").join(format!("{name}.log"))
    }

    fn log_pipe(&self, name: &WorkloadName) -> Option<(OwnedFd, OwnedFd)> {
        let dir = self.settings.state_dir.join("logs");
        let made = crate::fsutil::create_private_dir(&dir);
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
        let shown = live.stop.signal.to_string();
        self.note(&name, format!("stopping ({shown})"));
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = events.send(Event::StopTimeout { name, pid });
        });
    }

    pub fn stop_timeout(&mut self, name: &WorkloadName, pid: Pid) {
        if let Some(live) = self.live.get(name).filter(|l| l.sandbox.pid == pid) {
            tracing::warn!(workload = %name, action = "kill", "stop timeout: killing every process of the sandbox");
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
        tracing::info!(workload = %name, action = "exit", ?exit, ran_for = ?started.elapsed(), "exited");
        self.note(name, format!("exited: {}", exit_text(exit)));
        self.history.entry(name.clone()).or_default().last_exit = Some(exit);
        let now = Instant::now();
        match self.observed.remove(name) {
            // Stopped because its manifest is gone: its ids go back to the pool.
            Some(Observed::Stopping { .. }) if !self.desired.contains_key(name) => {
                self.history.remove(name);
                self.free_slice(name);
            }
            // Stopped by `paddock stop`: held at the version the operator held.
            Some(Observed::Stopping { .. }) if self.held.contains_key(name) => {
                let version = self.held[name];
                self.observed.insert(name.clone(), Observed::Held { version });
            }
            // Stopped to be replaced: the next plan starts the new version.
            Some(Observed::Stopping { .. }) => {}
            Some(state) => {
                let jitter = self.jitter();
                match state.exited(exit, now, &restart, jitter) {
                    Ok(next) => {
                        match &next {
                            Observed::Backoff { until, .. } => {
                                let delay = until.saturating_duration_since(now);
                                self.note(
                                    name,
                                    format!(
                                        "restart in {}",
                                        crate::model::Duration::from_millis(delay.as_millis() as u64)
                                    ),
                                );
                            }
                            Observed::Failed { failures, .. } => {
                                self.note(name, format!("failed: gave up after {failures} consecutive failures"));
                            }
                            _ => {}
                        }
                        self.observed.insert(name.clone(), next);
                    }
                    Err(e) => tracing::error!(workload = %name, error = %e, "unexpected exit"),
                }
            }
            None => {}
        }
    }

    /// Stops every sandbox (stop signal, timeout, kill) and waits for them.
    /// The manifests stay desired: a workload stopped at shutdown keeps its
    /// id slice for the next daemon (only a removed manifest frees one).
    pub fn begin_shutdown(&mut self) {
        let _ = self.notifier.notify("STOPPING=1");
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

    /// Answers a control request. The second value says whether the
    /// request changed what should run (the loop then reconciles).
    pub fn answer(&mut self, request: Request) -> (Response, bool) {
        let known = |sup: &Self, name: &str| -> Result<WorkloadName, Response> {
            WorkloadName::try_from(name).ok().filter(|n| sup.desired.contains_key(n)).ok_or_else(|| {
                Response::Error(format!(
                    "no workload {name:?}: there is no valid manifest {} (see `paddock status`)",
                    sup.settings.workloads.join(format!("{name}.toml")).display()
                ))
            })
        };
        match request {
            Request::Status { name: None } => (Response::Status(self.status()), false),
            Request::Status { name: Some(name) } => {
                let found = WorkloadName::try_from(name.as_str())
                    .ok()
                    .and_then(|n| self.status().into_iter().find(|s| s.name == n.as_str()).map(|s| (n, s)));
                match found {
                    Some((n, status)) => (Response::Detail(Box::new(self.detail(&n, status))), false),
                    None => (Response::Error(format!("no workload {name:?} (see `paddock status`)")), false),
                }
            }
            Request::Logs { name } => match WorkloadName::try_from(name.as_str()) {
                Ok(n) if self.log_path(&n).exists() || self.desired.contains_key(&n) => {
                    (Response::Logs { path: self.log_path(&n).display().to_string() }, false)
                }
                _ => (Response::Error(format!("no workload {name:?} and no log of one (see `paddock status`)")), false),
            },
            Request::Stop { name } => match known(self, &name) {
                Err(e) => (e, false),
                Ok(n) => {
                    let version = self.desired.get(&n).map_or(Version(0), |d| d.version);
                    let newly = self.held.insert(n.clone(), version).is_none();
                    self.save_held();
                    self.note(&n, "held stopped by paddock stop");
                    let running = self.live.contains_key(&n);
                    // A sandbox is stopped and, once it has exited, held; anything else is held at once.
                    if !running {
                        self.observed.insert(n.clone(), Observed::Held { version });
                    } else if !matches!(self.observed.get(&n), Some(Observed::Stopping { .. })) {
                        self.stop(&n);
                    }
                    let text = match (newly, running) {
                        (_, true) => format!(
                            "stopping {n}; it stays stopped until `paddock start {n}` or a change to its manifest"
                        ),
                        (true, false) => {
                            format!("{n} is held stopped until `paddock start {n}` or a change to its manifest")
                        }
                        (false, false) => format!("{n} is already held stopped"),
                    };
                    (Response::Done(text), false)
                }
            },
            Request::Start { name } => match known(self, &name) {
                Err(e) => (e, false),
                Ok(n) => {
                    let was_held = self.held.remove(&n).is_some();
                    if was_held {
                        self.save_held();
                        self.note(&n, "released by paddock start");
                    }
                    let ended = matches!(
                        self.observed.get(&n),
                        Some(Observed::Failed { .. } | Observed::Exited { .. } | Observed::Held { .. })
                    );
                    if ended {
                        self.observed.remove(&n);
                        self.history.entry(n.clone()).or_default().restarts = 0;
                        self.note(&n, "started again by paddock start");
                    }
                    let text = if was_held || ended {
                        format!("starting {n}")
                    } else {
                        format!("{n} is not stopped (state {})", self.state_name(&n))
                    };
                    (Response::Done(text), true)
                }
            },
            Request::Restart { name } => match known(self, &name) {
                Err(e) => (e, false),
                Ok(n) => {
                    if self.held.remove(&n).is_some() {
                        self.save_held();
                    }
                    self.history.entry(n.clone()).or_default().restarts = 0;
                    self.note(&n, "restart asked by paddock restart");
                    self.why.insert(n.clone(), "paddock restart".to_owned());
                    if self.live.contains_key(&n) {
                        if !matches!(self.observed.get(&n), Some(Observed::Stopping { .. })) {
                            self.stop(&n);
                        }
                    } else {
                        // Ended, failed or waiting: start at once.
                        self.observed.remove(&n);
                    }
                    (Response::Done(format!("restarting {n}")), true)
                }
            },
            // The loop itself rescans and reconciles for these.
            Request::Reload => (Response::Error("reload is the event loop's".to_owned()), false),
            Request::Plan { dir } => {
                let dir = dir.map_or_else(|| self.settings.workloads.clone(), PathBuf::from);
                match self.preview(&dir) {
                    Ok(report) => (Response::Plan(report), false),
                    Err(e) => (Response::Error(e), false),
                }
            }
        }
    }

    fn state_name(&self, name: &WorkloadName) -> &'static str {
        self.observed.get(name).map_or("stopped", Observed::name)
    }

    /// `paddock plan DIR`: the actions the pure planner would take if the
    /// workloads directory looked like `dir`, without taking them. Invalid
    /// files keep their last valid version, as in a real rescan.
    fn preview(&self, dir: &std::path::Path) -> Result<Report, String> {
        let snapshot = scan::scan(dir, None).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut manifests: BTreeMap<WorkloadName, (Version, Manifest)> =
            self.desired.iter().map(|(n, d)| (n.clone(), (d.version, d.spec.manifest.clone()))).collect();
        let mut report = Report::default();
        let listed: BTreeSet<WorkloadName> =
            snapshot.keys().filter_map(|f| WorkloadName::try_from(f.strip_suffix(".toml").unwrap_or(f)).ok()).collect();
        manifests.retain(|n, _| listed.contains(n));
        for (file, found) in &snapshot {
            let shown = dir.join(file).display().to_string();
            match found {
                Found::Refused { message } => report.invalid.push(format!("{shown}: {message}")),
                Found::Read { text, version, .. } => {
                    let checked = self.validator.validate(file, text, HostChecks::Require);
                    match checked.spec {
                        Some(spec) => {
                            manifests.insert(spec.name.clone(), (*version, spec.manifest));
                        }
                        None => report.invalid.push(
                            checked
                                .problems
                                .iter()
                                .map(|p| render(p, &shown, text, Color::Never))
                                .collect::<String>()
                                .trim_end()
                                .to_owned(),
                        ),
                    }
                }
            }
        }
        let versions: BTreeMap<WorkloadName, Version> = manifests.iter().map(|(n, (v, _))| (n.clone(), *v)).collect();
        let why = |name: &WorkloadName| match (self.desired.get(name), manifests.get(name)) {
            (Some(old), Some((_, new))) => changed_keys(&old.spec.manifest, new),
            _ => "manifest changed".to_owned(),
        };
        for action in plan(&versions, &self.observed, Instant::now()).actions {
            report.actions.extend(describe(&action, why));
        }
        Ok(report)
    }

    fn detail(&self, name: &WorkloadName, status: WorkloadStatus) -> WorkloadDetail {
        let history = self.history.get(name);
        WorkloadDetail {
            status,
            effective_manifest: self.desired.get(name).and_then(|d| toml::to_string(&d.spec.manifest).ok()),
            changes: history.map(|h| h.changes.iter().cloned().collect()).unwrap_or_default(),
            log: self.log_path(name).display().to_string(),
            start_latency_ms: history.and_then(|h| h.start_latency).map(|d| d.as_secs_f64() * 1000.0),
        }
    }

    /// Prometheus text format (version 0.0.4).
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let status = self.status();
        let states = ["starting", "running", "backoff", "stopping", "stopped", "exited", "failed"];
        family(&mut out, "paddock_workload_state", "gauge", "1 for the workload's current state, 0 for the others.");
        for w in &status {
            for state in states {
                let _ = writeln!(
                    out,
                    "paddock_workload_state{{workload=\"{}\",state=\"{state}\"}} {}",
                    w.name,
                    u8::from(w.state == state)
                );
            }
        }
        family(&mut out, "paddock_workload_restarts", "gauge", "Restarts since the manifest last changed.");
        for w in &status {
            let _ = writeln!(out, "paddock_workload_restarts{{workload=\"{}\"}} {}", w.name, w.restarts);
        }
        family(
            &mut out,
            "paddock_workload_last_exit_code",
            "gauge",
            "The last run's exit code (128 + signal when killed).",
        );
        for (name, h) in &self.history {
            if let Some(exit) = h.last_exit {
                let _ = writeln!(out, "paddock_workload_last_exit_code{{workload=\"{name}\"}} {}", exit.code());
            }
        }
        family(
            &mut out,
            "paddock_workload_start_latency_seconds",
            "gauge",
            "The last start, from spawn to the workload's exec.",
        );
        for (name, h) in &self.history {
            if let Some(d) = h.start_latency {
                let _ = writeln!(
                    out,
                    "paddock_workload_start_latency_seconds{{workload=\"{name}\"}} {:.6}",
                    d.as_secs_f64()
                );
            }
        }
        family(
            &mut out,
            "paddock_reconcile_duration_seconds",
            "summary",
            "Time spent planning and acting, per reconcile.",
        );
        let _ = writeln!(out, "paddock_reconcile_duration_seconds_sum {:.6}", self.stats.reconcile_seconds);
        let _ = writeln!(out, "paddock_reconcile_duration_seconds_count {}", self.stats.reconciles);
        family(&mut out, "paddock_last_reconcile_duration_seconds", "gauge", "The last reconcile's duration.");
        let _ = writeln!(out, "paddock_last_reconcile_duration_seconds {:.6}", self.stats.last_reconcile_seconds);
        let files = self.snapshot.len();
        let invalid = self.snapshot.keys().filter(|f| self.invalid.contains_key(*f)).count();
        family(&mut out, "paddock_manifests", "gauge", "Manifest files in the workloads directory, by validity.");
        let _ = writeln!(out, "paddock_manifests{{validity=\"valid\"}} {}", files - invalid);
        let _ = writeln!(out, "paddock_manifests{{validity=\"invalid\"}} {invalid}");
        let s = &self.settings;
        let used: BTreeSet<(u32, u32)> =
            self.history.values().filter_map(|h| h.slice).map(|sl| (sl.uid.start, sl.gid.start)).collect();
        family(&mut out, "paddock_id_slices", "gauge", "Id slices of the remap ranges, used and in all.");
        let _ = writeln!(out, "paddock_id_slices{{kind=\"used\"}} {}", used.len());
        let total = crate::idmap::slice_count(&s.ranges.uids, &s.ranges.gids, s.slice_size);
        let _ = writeln!(out, "paddock_id_slices{{kind=\"total\"}} {total}");
        out
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
                    state: self.state_name(&name).to_owned(),
                    pid: live.map(|l| l.sandbox.pid.as_raw()),
                    uid_map: slice.map(|s| IdMap { host_start: s.uid.start, size: s.uid.count }),
                    gid_map: slice.map(|s| IdMap { host_start: s.gid.start, size: s.gid.count }),
                    restarts: history.map_or(0, |h| h.restarts),
                    last_exit: history.and_then(|h| h.last_exit).map(|e| match e {
                        ExitKind::Code(c) => serde_json::Value::from(c),
                        other => serde_json::Value::from(exit_name(other)),
                    }),
                    error: self.invalid.get(&file).cloned().or_else(|| history.and_then(|h| h.start_error.clone())),
                    uptime_seconds: live
                        .filter(|_| matches!(self.observed.get(&name), Some(Observed::Running { .. })))
                        .map(|l| l.started.elapsed().as_secs()),
                    manifest: self.settings.workloads.join(&file).display().to_string(),
                    held: self.held.contains_key(&name),
                    name: name.to_string(),
                }
            })
            .collect()
    }
}
