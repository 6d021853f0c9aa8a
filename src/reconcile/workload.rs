//! One record per workload: what its manifest asks for, what runs, what an
//! operator said, and what happened to it. The core changes records only
//! through its transitions (`core.rs`); everything else reads them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::state::State;
use crate::model::{Exit, Manifest, Signal, WorkloadName};

/// Which manifest content a workload runs: a hash of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

/// Now, as the core sees it: a monotonic instant for delays and a wall
/// clock for what `status` shows. Passed in, never read by the core.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn read() -> Self {
        Clock { now: Instant::now(), wall: SystemTime::now() }
    }

    /// The same moment `d` later (for tests and previews).
    pub fn after(self, d: Duration) -> Self {
        Clock { now: self.now + d, wall: self.wall + d }
    }
}

/// Why a workload is started, restarted or stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Its manifest appeared.
    New,
    /// Its manifest changed; these top-level keys differ (none named: a
    /// difference no key's value shows).
    Changed(Vec<String>),
    /// Its manifest was removed.
    Removed,
    /// Its restart delay is over.
    RestartDelayOver,
    /// `paddock restart`.
    RestartAsked,
    /// `paddock start`.
    StartAsked,
    /// `paddock stop`.
    StopAsked,
    /// The daemon is stopping.
    Shutdown,
    /// The daemon before stopped it at its own stop, and died before the
    /// stop was over (`Replacing::halted`).
    ShutdownCut,
    /// Its health check failed `retries` times in a row.
    Unhealthy,
    /// It waits for these (`after`).
    Waiting(Vec<String>),
    /// `paddock reload`: a start this host could not make is tried again.
    Reloaded,
    /// Its file edited in words alone (`Desired::reworded_as`) while a
    /// start this host could not make had left it failed: tried again.
    Edited,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::New => f.write_str("manifest added"),
            Cause::Changed(keys) => match keys.as_slice() {
                [] => f.write_str("manifest changed"),
                [one] => write!(f, "manifest changed: {one}"),
                [rest @ .., last] => write!(f, "manifest changed: {} and {last}", rest.join(", ")),
            },
            Cause::Removed => f.write_str("manifest removed"),
            Cause::RestartDelayOver => f.write_str("its restart delay is over"),
            Cause::RestartAsked => f.write_str("paddock restart"),
            Cause::StartAsked => f.write_str("paddock start"),
            Cause::StopAsked => f.write_str("paddock stop"),
            Cause::Shutdown => f.write_str("the daemon is stopping"),
            Cause::ShutdownCut => {
                f.write_str("the daemon before stopped it at its own stop, and died before it was over")
            }
            Cause::Unhealthy => f.write_str("unhealthy: its health check failed"),
            Cause::Waiting(waits) => write!(f, "after {}", waits.join(", ")),
            Cause::Reloaded => f.write_str("paddock reload: tried again"),
            Cause::Edited => f.write_str("manifest edited, the same once read: a start the host failed, tried again"),
        }
    }
}

/// The last valid version of a manifest: it keeps running while a newer
/// version of the file is invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub version: Version,
    pub manifest: Arc<Manifest>,
    /// The file's text it was read from.
    pub source: Arc<str>,
}

impl Desired {
    /// Whether `next` is this manifest written differently: another
    /// version of the file that reads as the same manifest (comments,
    /// blank lines, spacing, key order or quoting changed; a default
    /// written out or left out; `1s` for `1000ms`). Nothing that runs
    /// changes with it (`Core::on_manifest`). `name`: the workload's, as
    /// the hostname's default is.
    pub fn reworded_as(&self, next: &Desired, name: &WorkloadName) -> bool {
        self.version != next.version && self.manifest.reads_as(&next.manifest, name.as_str())
    }

    /// What its manifest reads as, kept with a hold or an end (`Reads`):
    /// a hash (FNV-1a) of the manifest as JSON, every default filled in
    /// (the hostname's, workload `name`'s, too: `Manifest::reads_as`).
    pub fn reads(&self, name: &WorkloadName) -> Reads {
        let json = serde_json::to_string(&self.manifest.effective(name.as_str())).unwrap_or_default();
        let digest =
            json.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        Reads { version: self.version, digest }
    }
}

/// A version of a workload's file and what its manifest reads as
/// (`Desired::reads`), kept with a hold or an end: a successor that
/// finds the file at another version that reads the same (reworded
/// while no daemon ran, or after an invalid edit, whose version it
/// never read) keeps the hold and the end, as the daemon that saw the
/// edit would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reads {
    pub version: Version,
    pub digest: u64,
}

/// What the workload's manifest file says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum File {
    /// No file (removed, or known only from the daemon's records).
    Absent,
    /// The file is valid: `Workload::desired` is its content.
    Valid,
    /// The file is invalid (or unreadable); the problems, as `check` shows them.
    Invalid(String),
}

/// Why a start failed, for the restart decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The workload's run: counts as a failure, restarted with backoff.
    Workload,
    /// This host cannot run it as written (a missing cgroup controller, a
    /// missing mount source...): `failed` at once, retried when its
    /// manifest changes or an operator restarts it, not in a loop.
    Host,
    /// The daemon could not start it now (out of descriptors, a full disk):
    /// retried shortly, not counted against the workload.
    Daemon,
}

/// A start that failed: the typed error, kept as it is and rendered where
/// it is shown.
#[derive(Debug, Clone)]
pub struct StartFailure {
    pub blame: Blame,
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

impl StartFailure {
    pub fn new(blame: Blame, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StartFailure { blame, error: Arc::new(error) }
    }
}

impl PartialEq for StartFailure {
    fn eq(&self, other: &Self) -> bool {
        self.blame == other.blame && self.error.to_string() == other.error.to_string()
    }
}

/// A start whose init did not report within `start_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("its sandbox did not start within {} (start_timeout): killed", crate::model::Duration::from_millis(.0.as_millis() as u64))]
pub struct StartTimedOut(pub Duration);

/// What a workload's run came to, kept across daemon restarts: a one-shot
/// that finished is not run again, nor one that gave up, until its
/// manifest changes or an operator starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub version: Version,
    pub failed: bool,
    /// Only shown: an exit a newer daemon wrote that this one does not
    /// know is none, not a torn file (helper-115).
    #[serde(default, deserialize_with = "or_none")]
    pub exit: Option<Exit>,
}

/// A kept field read for what it says, and as none where it says what
/// this daemon does not know (written by a newer one, before a downgrade).
pub fn or_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// How a version's runs have gone, kept across daemon restarts (a crash,
/// an upgrade): its consecutive failures, from which the backoff and
/// `max_retries` go on, and its restarts, which `status` and the metrics
/// count since the manifest last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub version: Version,
    pub failures: u32,
    pub restarts: u32,
    /// The daemon stopped its last run at its own stop (`systemctl stop`,
    /// a reboot): the next daemon's start of it begins again (no failures
    /// carried, no restart counted); its restarts are shown as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub halted: bool,
}

/// A restart asked of the run of a version (by `paddock restart`, or by
/// its health checks), carried out by its sandbox's end. Persisted: a
/// daemon that dies or upgrades while the sandbox stops leaves it to the
/// next, which adopts the sandbox still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacing {
    pub version: Version,
    /// Stopped for being unhealthy: its end counts as a failed run.
    pub unhealthy: bool,
    /// Stopped at the daemon's own stop (`systemctl stop`, a reboot), kept
    /// before the signal went: a successor that adopts the run (the
    /// daemon died before the stop was over) starts it again as the next
    /// daemon's start of it would (no failure, no restart counted), never
    /// taking the end the signal caused for the workload's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub halted: bool,
    /// The run's init, when known: a successor carries the restart out
    /// on that run only, not on the one that replaced it (a daemon that
    /// died before writing that the restart was done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

impl Replacing {
    /// Whether this is a restart of the run of `version` whose init is `pid`.
    pub fn of(&self, version: Version, pid: i32) -> bool {
        self.version == version && self.pid.is_none_or(|p| p == pid)
    }
}

/// One thing that happened to a workload, for `paddock status NAME`.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    ManifestAdded,
    ManifestChanged(Vec<String>),
    /// Its file changed, its manifest did not (`Desired::reworded_as`).
    ManifestReworded,
    /// The file became invalid; whether a valid version keeps running.
    ManifestInvalid {
        kept: bool,
    },
    ManifestRemoved,
    Starting(Cause),
    Started {
        pid: i32,
    },
    /// Taken over from a daemon that died (or re-executed itself).
    Adopted {
        pid: i32,
    },
    StartFailed(StartFailure),
    Exited(Exit),
    RestartIn(Duration),
    GaveUp {
        failures: u32,
    },
    Stopping {
        signal: Signal,
        cause: Cause,
    },
    /// Killed at a deadline: its stop's, or its start's (an init that never reported).
    Killed {
        starting: bool,
    },
    Held,
    Released(Cause),
    /// Its health check's verdict changed.
    Health(super::health::Status),
    /// It waits to start for these (`after`); empty: it waits no more.
    Waiting(Vec<super::order::Wait>),
}

impl fmt::Display for Happening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Happening::ManifestAdded => f.write_str("manifest added"),
            Happening::ManifestChanged(keys) => Cause::Changed(keys.clone()).fmt(f),
            Happening::ManifestReworded => {
                f.write_str("manifest edited, the same once read (comments, formatting or defaults): nothing restarted")
            }
            Happening::ManifestInvalid { kept: true } => f.write_str("manifest invalid; the last valid version stays"),
            Happening::ManifestInvalid { kept: false } => f.write_str("manifest invalid; nothing runs"),
            Happening::ManifestRemoved => f.write_str("manifest removed"),
            Happening::Starting(cause) => write!(f, "starting ({cause})"),
            Happening::Started { pid } => write!(f, "started (pid {pid})"),
            Happening::Adopted { pid } => write!(f, "adopted (pid {pid}), running since before this daemon"),
            Happening::StartFailed(failure) => write!(f, "start failed: {}", failure.error),
            Happening::Exited(exit) => write!(f, "exited: {exit}"),
            Happening::RestartIn(delay) => {
                write!(f, "restart in {}", crate::model::Duration::from_millis(delay.as_millis() as u64))
            }
            Happening::GaveUp { failures: 1 } => f.write_str("failed: gave up after 1 failure"),
            Happening::GaveUp { failures } => write!(f, "failed: gave up after {failures} consecutive failures"),
            Happening::Stopping { signal, cause } => write!(f, "stopping with {signal} ({cause})"),
            Happening::Killed { starting: false } => f.write_str("stop timeout: killed"),
            Happening::Killed { starting: true } => f.write_str("start timeout: its init did not report; killed"),
            Happening::Held => f.write_str("held stopped by paddock stop"),
            Happening::Released(cause) => write!(f, "released ({cause})"),
            Happening::Health(status) => write!(f, "health: {}", status.name()),
            Happening::Waiting(waits) if waits.is_empty() => f.write_str("no longer waiting"),
            Happening::Waiting(waits) => {
                let waits: Vec<String> = waits.iter().map(|w| w.to_string()).collect();
                write!(f, "waiting for {}", waits.join(", "))
            }
        }
    }
}

/// A happening and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub at: SystemTime,
    pub what: Happening,
}

/// How many changes a workload keeps.
pub const HISTORY: usize = 20;

/// Everything the daemon knows of one workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: WorkloadName,
    pub desired: Option<Desired>,
    /// The version its current sandbox was started from (its stop signal
    /// and restart policy apply to that run, whatever the file says now).
    pub runs: Option<Desired>,
    pub file: File,
    pub state: State,
    /// Held stopped by `paddock stop` at this manifest version; another
    /// version (or `paddock start`) releases it. Persisted.
    pub hold: Option<Version>,
    /// What its last run came to, when it is not to run again. Persisted.
    pub ended: Option<Ended>,
    /// A restart of its run under way (see `Replacing`). Persisted.
    pub replacing: Option<Replacing>,
    /// Why what the daemon kept of it is in doubt (an unreadable file):
    /// then it is held at whatever version its manifest has, until an
    /// operator starts it.
    pub doubt: Option<String>,
    /// Restarts since its manifest last changed.
    pub restarts: u32,
    /// What a predecessor daemon counted of a version's runs, until that
    /// version's run takes it over (its adoption, or its start).
    pub carried: Option<Counts>,
    /// The counts last given to be kept (`counts` as a `Persist` wrote
    /// them): a change from these is written, so no count a reset
    /// dropped comes back after a daemon's restart.
    pub kept_counts: Option<Counts>,
    pub last_exit: Option<Exit>,
    /// The current start error, until a start succeeds or the manifest changes.
    pub error: Option<StartFailure>,
    /// Why its next start happens.
    pub cause: Option<Cause>,
    pub history: VecDeque<Change>,
    /// How long its last start took, from begin to the workload's exec.
    pub start_latency: Option<Duration>,
    /// Its current run's health, when its manifest has a check.
    pub health: Option<super::health::Health>,
    /// What a predecessor kept of its run's health, until the checks of
    /// the run it adopted begin (taken up if that is the run it was of).
    pub kept_health: Option<super::health::KeptHealth>,
    /// When a predecessor's stop of a run (its version and init) was to
    /// kill it: a stop of that run ends then, not a whole timeout later.
    pub kept_stop: Option<(Version, i32, Instant)>,
    /// Whom it waits for before it starts (`after`).
    pub waiting: Vec<super::order::Wait>,
    /// What a predecessor kept of what its held or ended version reads
    /// as (`Reads`), until its file is read.
    pub kept_reads: Vec<Reads>,
}

impl Workload {
    pub fn new(name: WorkloadName) -> Self {
        Workload {
            name,
            desired: None,
            runs: None,
            file: File::Absent,
            state: State::Idle,
            hold: None,
            ended: None,
            replacing: None,
            doubt: None,
            restarts: 0,
            carried: None,
            kept_counts: None,
            last_exit: None,
            error: None,
            cause: None,
            history: VecDeque::new(),
            start_latency: None,
            health: None,
            kept_health: None,
            kept_stop: None,
            waiting: Vec::new(),
            kept_reads: Vec::new(),
        }
    }

    /// How its last run ended, kept where no `ended` says it (held,
    /// waiting out a restart delay, or running again): `status` shows it
    /// after a restart of the daemon too, a crash included.
    pub fn exit_kept(&self) -> Option<Exit> {
        self.last_exit.filter(|_| self.ended.is_none())
    }

    /// What is kept of its runs' counts (None when there is nothing to
    /// count).
    pub fn counts(&self) -> Option<Counts> {
        // Not started yet by this daemon: what a predecessor counted.
        let Some(version) = self.state.version() else { return self.carried };
        let failures = self.state.failures();
        (failures > 0 || self.restarts > 0).then_some(Counts {
            version,
            failures,
            restarts: self.restarts,
            halted: false,
        })
    }

    /// Restarts and failures begin again (a manifest change, `paddock
    /// start` or `restart`): nothing a predecessor counted applies.
    pub fn reset_counts(&mut self) {
        self.restarts = 0;
        self.carried = None;
    }

    /// Asks for its kept state to be written when its counts differ from
    /// what was last kept.
    pub(super) fn keep_counts(&mut self, effects: &mut Vec<super::Effect>) {
        let now = self.counts();
        if now != self.kept_counts {
            self.kept_counts = now;
            self.persist(effects);
        }
    }

    /// Asks for its kept state to be written, once among `effects`.
    pub(super) fn persist(&self, effects: &mut Vec<super::Effect>) {
        if !effects.iter().any(|e| matches!(e, super::Effect::Persist { name } if *name == self.name)) {
            effects.push(super::Effect::Persist { name: self.name.clone() });
        }
    }

    /// `to`, the same manifest as version `from` in other words
    /// (`Desired::reworded_as`), takes its place wherever a version is
    /// kept: what runs and ran, a hold, an end, counts, a restart under
    /// way, what a predecessor kept of a run's health and stop. So an
    /// edit of comments restarts nothing, releases no hold and runs no
    /// finished one-shot again.
    pub(super) fn retag(&mut self, from: Version, to: &Desired) {
        let retag = |version: &mut Version| {
            if *version == from {
                *version = to.version;
            }
        };
        self.state.retag(from, to.version);
        let versions = [
            self.hold.as_mut(),
            self.ended.as_mut().map(|e| &mut e.version),
            self.replacing.as_mut().map(|r| &mut r.version),
            self.carried.as_mut().map(|c| &mut c.version),
            self.kept_health.as_mut().map(|k| &mut k.version),
            self.kept_stop.as_mut().map(|(version, ..)| version),
        ];
        versions.into_iter().flatten().for_each(retag);
        self.kept_reads.iter_mut().map(|r| &mut r.version).for_each(retag);
        if self.runs.as_ref().is_some_and(|runs| runs.version == from) {
            self.runs = Some(to.clone());
        }
    }

    /// What `versions` read as (`Reads`), where it is known: of the
    /// manifest that runs or is wanted, or as a predecessor kept it.
    pub fn reads_of(&self, versions: impl IntoIterator<Item = Version>) -> Vec<Reads> {
        let mut reads: Vec<Reads> = Vec::new();
        for version in versions {
            let known = [self.desired.as_ref(), self.runs.as_ref()]
                .into_iter()
                .flatten()
                .find(|d| d.version == version)
                .map(|d| d.reads(&self.name))
                .or_else(|| self.kept_reads.iter().find(|r| r.version == version).copied());
            reads.extend(known.filter(|r| !reads.contains(r)));
        }
        reads
    }

    /// What its hold and its end are kept with (`Reads`).
    pub fn reads_kept(&self) -> Vec<Reads> {
        self.reads_of(self.hold.into_iter().chain(self.ended.map(|e| e.version)))
    }

    /// What a predecessor counted of `version`'s runs, taken (once).
    pub fn take_carried(&mut self, version: Version) -> Option<Counts> {
        self.carried.take().filter(|c| c.version == version)
    }

    pub fn note(&mut self, at: SystemTime, what: Happening) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Change { at, what });
    }

    /// The name `status` shows for its state.
    pub fn state_name(&self) -> &'static str {
        match (&self.state, &self.file) {
            // (In a backoff with no valid manifest: a restart delay a
            // predecessor left, the file found invalid since.)
            (State::Idle | State::Backoff { .. }, File::Invalid(_)) if self.desired.is_none() => "invalid",
            (State::Idle, _) if !self.waiting.is_empty() => "waiting",
            (state, _) => state.name(),
        }
    }

    /// Its version, when a valid manifest exists.
    pub fn desired_version(&self) -> Option<Version> {
        self.desired.as_ref().map(|d| d.version)
    }
}
