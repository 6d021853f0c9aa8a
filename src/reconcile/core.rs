//! The supervisor's pure core: every change to a workload goes through one
//! of these functions, which return the effects for the shell to carry
//! out. No I/O, no clock (`Clock` is passed in), no jitter of its own.
//!
//! - `on_manifest`: a manifest file was found valid, invalid, or removed;
//! - `on_request`: `paddock start|stop|restart`;
//! - `on_started`, `on_start_failed`, `on_exit`: what a sandbox did;
//! - `on_timer`: deadlines (stop and start timeouts);
//! - `reconcile`: level-triggered, plans what to start and stop for every
//!   workload at once (a missed event heals on the next pass);
//! - `shutdown`: stop everything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::State;
use super::workload::{Cause, Clock, Counts, Desired, Ended, File, Happening, Reads, Replacing, Version, Workload};
use crate::model::{Exit, Manifest, Signal, WorkloadName};

/// How long a start may take by default, from the clone to the init's
/// report, before it is killed and counted as failed (an init stuck on a
/// dead mount); `start_timeout` in paddock.toml.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A start the daemon could not make (out of descriptors, a full disk) is
/// tried again after this, without counting against the workload.
pub const DAEMON_RETRY: Duration = Duration::from_secs(2);

/// What a scan found for one workload's manifest file.
#[derive(Debug, Clone)]
pub enum ManifestEvent {
    /// Valid: its version, manifest and text.
    Valid(Desired),
    /// Invalid or unusable; the problems as `check` shows them.
    Invalid(String),
    Removed,
}

/// What the shell carries out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Begin a sandbox for this version; its outcome comes back through
    /// `on_started` or `on_start_failed`.
    Start { name: WorkloadName, desired: Desired, cause: Cause },
    /// Send the stop signal (`on_timer` kills at the deadline).
    Stop { name: WorkloadName, signal: Signal, cause: Cause },
    /// Kill every process of the sandbox.
    Kill { name: WorkloadName },
    /// Its kept state (hold, ended) changed: write it.
    Persist { name: WorkloadName },
    /// Its file changed, its manifest did not (comments, formatting):
    /// version `from` is now `desired`'s (`Desired::reworded_as`). Said in the
    /// log; its sandbox's record, where it names `from`, is rewritten, so
    /// that a successor adopts the sandbox as running the file's version
    /// (once what is kept of it, now of that version, is on disk).
    Reworded { name: WorkloadName, from: Version, desired: Desired },
    /// Gone for good: free its ids, drop its kept state. One `in_doubt`
    /// (what was kept of it unreadable) keeps its ids while processes
    /// run as them: a sandbox of it may run on.
    Forget { name: WorkloadName, in_doubt: bool },
    /// Make one health probe of the run whose init is `pid`; its result
    /// comes back through `on_probe`.
    Probe { name: WorkloadName, pid: i32, manifest: Arc<Manifest>, probe: crate::model::Probe, timeout: Duration },
}

/// What a reconcile decided, as `reload` and `plan` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Start,
    /// A start after a restart delay.
    Retry,
    /// Stop, then start the new version.
    Restart,
    Stop,
    /// Not started yet: it waits for what it comes `after`.
    Wait,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub verb: Verb,
    pub name: WorkloadName,
    pub cause: Cause,
}

/// One reconcile pass.
#[derive(Debug, Default, PartialEq)]
pub struct Pass {
    pub effects: Vec<Effect>,
    pub actions: Vec<Action>,
    /// Starts left for the next pass (at most `max_starts` per pass).
    pub queued: usize,
}

/// `paddock start|stop|restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
}

/// What a request did, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Its sandbox is being stopped and will be held.
    Stopping,
    /// It had no sandbox and is held stopped now.
    Held,
    AlreadyHeld,
    /// It will be started.
    Starting,
    /// `start` on a workload that is not stopped: its state.
    NotStopped(&'static str),
    Restarting,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no workload {0:?} has a valid manifest")]
pub struct Unknown(pub String);

#[derive(Debug, Clone)]
pub struct Core {
    pub(super) workloads: BTreeMap<WorkloadName, Workload>,
    /// Every workload's kept state is in doubt (see `Workload::doubt`).
    doubt_all: Option<String>,
    pub(super) start_timeout: Duration,
    /// The daemon is stopping: what exits lets the next layer stop.
    pub(super) halting: bool,
    /// Whether the workloads directory has been read since what the daemon
    /// kept was restored: until it has, a workload with no file may have
    /// one (a scan refused at the start, out of descriptors), and what was
    /// kept of it (a hold, a one-shot's end) is not forgotten.
    pub(super) files_seen: bool,
    /// A predecessor's stop deadline was put back (`restore_stopping`):
    /// the first pass that knows the manifests drops what it did not use.
    pub(super) kept_stops: bool,
    /// When `reconcile` last ran: a backoff whose end it saw and left (its
    /// start waits for another workload, or for room among the starts)
    /// is not woken for again, or the loop would spin on its past end.
    /// What unblocks it (a start's outcome, an edit) reconciles anyway.
    pub(super) reconciled: Option<Instant>,
}

impl Default for Core {
    fn default() -> Self {
        Core {
            workloads: BTreeMap::new(),
            doubt_all: None,
            start_timeout: START_TIMEOUT,
            halting: false,
            files_seen: true,
            kept_stops: false,
            reconciled: None,
        }
    }
}

/// The top-level manifest keys that differ between two versions.
pub fn changed_keys(old: &Manifest, new: &Manifest) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

impl Core {
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    pub fn start_timeout(&self) -> Duration {
        self.start_timeout
    }

    pub fn get(&self, name: &WorkloadName) -> Option<&Workload> {
        self.workloads.get(name)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.values()
    }

    fn entry(&mut self, name: &WorkloadName) -> &mut Workload {
        let doubt = &self.doubt_all;
        self.workloads.entry(name.clone()).or_insert_with(|| {
            let mut w = Workload::new(name.clone());
            w.doubt = doubt.clone();
            w
        })
    }

    /// Kept state is restored: no workload is forgotten for want of a file
    /// until the workloads directory is read (`files_read`).
    pub fn files_unread(&mut self) {
        self.files_seen = false;
    }

    /// Whether the workloads directory was read since kept state was restored.
    pub fn files_seen(&self) -> bool {
        self.files_seen
    }

    /// The workloads directory was read: a workload with no file has none.
    pub fn files_read(&mut self) {
        self.files_seen = true;
    }

    /// What the daemon kept of `name` could not be read: it is held, at
    /// whatever version its manifest has, until an operator starts it.
    pub fn doubt(&mut self, name: &WorkloadName, why: String) {
        self.entry(name).doubt = Some(why);
    }

    /// As `doubt`, for every workload (a lost list of holds).
    pub fn doubt_all(&mut self, why: String) {
        for w in self.workloads.values_mut() {
            w.doubt = Some(why.clone());
        }
        self.doubt_all = Some(why);
    }

    /// Puts back what a daemon kept of a workload across its restart: a
    /// hold, or how its last run ended (`last_exit` where no `ended` says
    /// it: `Workload::exit_kept`). The manifest that follows decides
    /// whether it still applies (the same version keeps it).
    pub fn restore(
        &mut self,
        name: &WorkloadName,
        hold: Option<Version>,
        ended: Option<Ended>,
        counts: Option<Counts>,
        last_exit: Option<Exit>,
    ) {
        let w = self.entry(name);
        w.hold = hold;
        w.ended = ended;
        w.carried = counts;
        w.kept_counts = counts;
        let of = |version: Version| counts.filter(|c| c.version == version);
        // How its last run ended, shown whatever came after (a hold, a failure).
        w.last_exit = ended.and_then(|e| e.exit).or(last_exit);
        w.state = match (hold, ended) {
            (Some(version), _) => State::Held { version },
            (None, Some(Ended { version, failed: true, .. })) => {
                State::Failed { version, failures: of(version).map_or(0, |c| c.failures) }
            }
            (None, Some(Ended { version, failed: false, .. })) => State::Exited { version },
            (None, None) => State::Idle,
        };
        // Shown while it does not run (`status`, the metrics), as before.
        if let Some(c) = w.state.version().and_then(of) {
            w.restarts = c.restarts;
        }
    }

    /// Puts back what its held or ended version reads as (`Reads`), as a
    /// predecessor kept it.
    pub fn restore_reads(&mut self, name: &WorkloadName, reads: Vec<Reads>) {
        self.entry(name).kept_reads = reads;
    }

    /// Puts back what was `left` of the restart delay a workload was
    /// waiting out when a daemon died, stopped or upgraded (in this
    /// boot): it waits out the rest, as if the daemon had never gone,
    /// rather than start at once. Only for a workload restored to start
    /// (no hold, no end) from counts of runs that were not cut by the
    /// daemon's own stop.
    pub fn restore_delay(&mut self, name: &WorkloadName, left: Duration, at: Clock) {
        let w = self.entry(name);
        if let (State::Idle, Some(c)) = (w.state, w.carried)
            && !c.halted
        {
            // The count stays carried: an adopted run (the daemon died
            // before it wrote that the retry began) takes it over.
            w.state = State::Backoff { version: c.version, until: at.now + left, failures: c.failures };
            w.restarts = c.restarts;
        }
    }

    /// Puts back the end of the timeout of a stop under way when a daemon
    /// died or upgraded: the stop of that run (`version`, init `pid`),
    /// if this daemon adopts it and stops it, kills it then.
    pub fn restore_stopping(&mut self, name: &WorkloadName, version: Version, pid: i32, until: Instant) {
        self.entry(name).kept_stop = Some((version, pid, until));
        self.kept_stops = true;
    }

    /// Puts back why the start whose restart delay `restore_delay` put
    /// back failed (shown by `status` while it waits, as before).
    pub fn restore_start_error(&mut self, name: &WorkloadName, error: String) {
        let w = self.entry(name);
        if matches!(w.state, State::Backoff { .. }) {
            w.error = Some(super::StartFailure::new(super::Blame::Workload, std::io::Error::other(error)));
        }
    }

    /// Puts back a restart that was under way when a daemon died or
    /// upgraded (`Replacing`): carried out if its sandbox is adopted
    /// running that version, dropped otherwise.
    pub fn restore_replacing(&mut self, name: &WorkloadName, replacing: Replacing) {
        self.entry(name).replacing = Some(replacing);
    }

    /// Puts back what a predecessor kept of a run's health: taken up if
    /// this daemon adopts that run.
    pub fn restore_health(&mut self, name: &WorkloadName, kept: super::health::KeptHealth) {
        self.entry(name).kept_health = Some(kept);
    }

    /// How the run before the one the image before this one ran ended,
    /// handed on at an upgrade (`upgrade::hand_on_runs`): its LAST EXIT,
    /// unless what was kept says another.
    pub fn restore_previous_exit(&mut self, name: &WorkloadName, exit: Exit) {
        self.entry(name).last_exit.get_or_insert(exit);
    }

    /// A sandbox that ran on while no daemon watched (or across this
    /// daemon's exec) is this workload's, running `version` since `since`.
    pub fn adopt(&mut self, name: &WorkloadName, version: Version, pid: i32, since: Instant, at: Clock) {
        let w = self.entry(name);
        // One of another version stays: perhaps the file's, kept by a
        // predecessor that died before the record named it (`Effect::Reworded`),
        // taken up if the file reads as what runs (`on_manifest`).
        let carried = w.carried.filter(|c| c.version == version);
        if carried.is_some() {
            w.carried = None;
        }
        let failures = carried.map_or(0, |c| c.failures);
        w.restarts = carried.map_or(w.restarts, |c| c.restarts);
        w.state = State::Running { version, since, failures, pid };
        w.note(at.wall, Happening::Adopted { pid });
        w.health = None;
        // It runs: a start error kept of a failure before it is over.
        w.error = None;
    }

    /// An adopted sandbox whose file is invalid runs on with `desired`,
    /// the manifest it was started from (its record's): as after a bad
    /// edit, its stop signal, restart policy, health checks, ports and
    /// order are that manifest's. Only for a sandbox of that version that
    /// has no manifest yet.
    pub fn keep_adopted(&mut self, name: &WorkloadName, desired: Desired, at: Clock) {
        let w = self.entry(name);
        if w.desired.is_some() || !w.state.has_sandbox() || w.state.version() != Some(desired.version) {
            return;
        }
        Self::take_over(w, &desired, at);
        w.desired = Some(desired);
    }

    /// An adopted sandbox whose file is another version now (or gone)
    /// runs `desired`, the manifest it was started from (its record's):
    /// the restart or stop that follows uses its stop signal and timeout.
    /// Only for a sandbox of that version whose run is not known yet.
    pub fn runs_adopted(&mut self, name: &WorkloadName, desired: Desired, at: Clock) {
        let Some(w) = self.workloads.get_mut(name) else { return };
        if w.runs.is_none() && w.state.has_sandbox() && w.state.version() == Some(desired.version) {
            Self::take_over(w, &desired, at);
        }
    }

    /// An adopted sandbox runs `desired`: its stop signal, restart policy
    /// and health checks are that manifest's from now on.
    fn take_over(w: &mut Workload, desired: &Desired, at: Clock) {
        w.runs = Some(desired.clone());
        if let State::Running { since, version, pid, .. } = w.state {
            let kept = w.kept_health.take().filter(|k| (k.version, k.pid) == (version, pid));
            w.begin_health(since.max(at.now));
            // As its predecessor's probes left it: no change to say.
            if let (Some(k), Some(h)) = (kept, &mut w.health) {
                h.status = k.status;
            }
            // Its health is this daemon's to learn, and likely it was
            // healthy: probed at once, not an interval later (meanwhile
            // "starting", and what comes `after` it waited: helper-101).
            if let Some(h) = &mut w.health {
                h.next = Some(at.now);
            }
        }
    }

    pub fn on_manifest(&mut self, name: &WorkloadName, event: ManifestEvent, at: Clock) -> Vec<Effect> {
        let w = self.entry(name);
        let mut effects = Vec::new();
        match event {
            ManifestEvent::Valid(desired) => {
                let version = desired.version;
                let mut before = w.desired.take();
                w.file = File::Valid;
                // The same manifest written differently: only its version changes,
                // wherever it is kept (for an adopted sandbox, the version
                // its record names, the file reworded while no daemon ran).
                // Or what its sandbox runs, where that is another version than
                // the last valid one: an edit whose restart waits (for what it
                // comes `after`), reverted with a comment left.
                // Not for a start this host failed (a controller or a mount
                // source missing): an edit, of a comment even, is the
                // operator's word that the host is mended, as `reload` is.
                let host_failed = matches!(w.state, State::Failed { .. })
                    && w.error.as_ref().is_some_and(|e| e.blame == super::workload::Blame::Host)
                    && w.hold.is_none();
                let reworded = match (&before, &w.runs) {
                    _ if host_failed => None,
                    (Some(old), _) if old.reworded_as(&desired, name) => Some(old.version),
                    (_, Some(runs)) if w.state.has_sandbox() => {
                        runs.reworded_as(&desired, name).then_some(runs.version)
                    }
                    // Held or ended at a version this daemon has not read
                    // (reworded while no daemon ran, or since an invalid
                    // edit): what its predecessor kept it reads as.
                    // (The digest, a serialization of the manifest, only
                    // where one was kept of another version: not for every
                    // file of a daemon's first scan.)
                    (None, _) if w.kept_reads.iter().any(|r| r.version != version) => {
                        let reads = desired.reads(name);
                        w.kept_reads
                            .iter()
                            .find(|r| r.version != version && r.digest == reads.digest)
                            .map(|r| r.version)
                    }
                    (None, _) => None,
                    (Some(_), _) => None,
                };
                if let Some(from) = reworded {
                    w.retag(from, &desired);
                    // Adopted: what a predecessor counted of the file's version
                    // (it died before the sandbox's record named it) is the run's.
                    if let (None, State::Running { version, failures, .. }, Some(c)) =
                        (&before, &mut w.state, w.carried)
                        && c.version == *version
                    {
                        *failures = c.failures;
                        w.restarts = c.restarts;
                        w.carried = None;
                    }
                    w.note(at.wall, Happening::ManifestReworded);
                    effects.push(Effect::Reworded { name: name.clone(), from, desired: desired.clone() });
                    // Its counts, hold and end are kept of this version now.
                    w.kept_counts = w.counts();
                    w.persist(&mut effects);
                    if before.as_ref().is_some_and(|old| old.version == from) {
                        before = Some(desired.clone());
                    }
                }
                // Adopted: a predecessor's count of a version other than the
                // run's (not taken up above) is of no run.
                if before.is_none()
                    && w.state.has_sandbox()
                    && w.carried.is_some_and(|c| Some(c.version) != w.state.version())
                {
                    w.carried = None;
                }
                if before.as_ref().is_none_or(|d| d.version != version) {
                    let cause = match (&before, &w.runs) {
                        (Some(old), _) if host_failed && old.reworded_as(&desired, name) => Cause::Edited,
                        (Some(old), _) => Cause::Changed(changed_keys(&old.manifest, &desired.manifest)),
                        // Its adopted sandbox runs another version (its
                        // record's): the file changed while no daemon ran.
                        (None, Some(runs)) if w.state.has_sandbox() && runs.version != version => {
                            Cause::Changed(changed_keys(&runs.manifest, &desired.manifest))
                        }
                        (None, _) => Cause::New,
                    };
                    w.note(
                        at.wall,
                        match &cause {
                            Cause::Changed(keys) => Happening::ManifestChanged(keys.clone()),
                            Cause::Edited => Happening::Released(Cause::Edited),
                            _ => Happening::ManifestAdded,
                        },
                    );
                    // Counted on when a predecessor's count of this
                    // version was taken over (its sandbox adopted) or is
                    // still to be (its start).
                    let counted_on = before.is_none()
                        && (w.carried.is_some_and(|c| c.version == version)
                            || (w.state.has_sandbox() && w.state.version() == Some(version)));
                    if !counted_on {
                        w.reset_counts();
                        // Another version's start error (one a predecessor
                        // left of this version is still why it waits).
                        w.error = None;
                    }
                    w.cause = Some(cause);
                    // Another manifest releases a hold and revives what ended.
                    let released = w.hold.take_if(|held| *held != version).is_some();
                    let revived = w.ended.take_if(|ended| ended.version != version).is_some();
                    if released || revived {
                        effects.push(Effect::Persist { name: name.clone() });
                    }
                    w.keep_counts(&mut effects);
                }
                // In doubt: held at this version (failing closed), never started.
                if w.doubt.is_some() && w.hold != Some(version) && !w.state.has_sandbox() {
                    w.hold = Some(version);
                    w.state = State::Held { version };
                    w.note(at.wall, Happening::Held);
                    effects.push(Effect::Persist { name: name.clone() });
                }
                // An adopted sandbox runs this version: its stop signal and
                // restart policy are this manifest's.
                if w.runs.is_none() && w.state.has_sandbox() && w.state.version() == Some(version) {
                    Self::take_over(w, &desired, at);
                }
                // What the file reads as is known now: kept with a hold or
                // an end that a predecessor kept without it (an older
                // paddock), so that the next daemon has it.
                let had = std::mem::take(&mut w.kept_reads);
                w.desired = Some(desired);
                let reads = w.reads_kept();
                if !reads.is_empty() && !reads.iter().all(|r| had.contains(r)) {
                    w.persist(&mut effects);
                }
            }
            ManifestEvent::Invalid(problems) => {
                if w.file != File::Invalid(problems.clone()) {
                    let kept = w.desired.is_some();
                    w.note(at.wall, Happening::ManifestInvalid { kept });
                }
                w.file = File::Invalid(problems);
            }
            ManifestEvent::Removed => {
                w.note(at.wall, Happening::ManifestRemoved);
                w.file = File::Absent;
                w.desired = None;
                w.kept_reads.clear();
                w.cause = Some(Cause::Removed);
                // Removing the manifest ends a hold (and what a run came to).
                if w.hold.take().is_some() | w.ended.take().is_some() {
                    effects.push(Effect::Persist { name: name.clone() });
                }
            }
        }
        effects
    }

    /// Whether any sandbox is left.
    pub fn any_sandbox(&self) -> bool {
        self.workloads.values().any(|w| w.state.has_sandbox())
    }

    /// The workloads that have a sandbox (starting, running or stopping).
    pub fn with_sandbox(&self) -> Vec<WorkloadName> {
        self.workloads.iter().filter(|(_, w)| w.state.has_sandbox()).map(|(n, _)| n.clone()).collect()
    }

    /// What a reconcile would do if the manifests were `manifests` (every
    /// workload not in it removed), without doing it.
    pub fn preview(&self, manifests: BTreeMap<WorkloadName, ManifestEvent>, at: Clock) -> Vec<Action> {
        let mut copy = self.clone();
        // Whoever waits is told again (a pass reports only a new wait).
        copy.workloads.values_mut().for_each(|w| w.waiting.clear());
        let gone: Vec<WorkloadName> = copy.workloads.keys().filter(|n| !manifests.contains_key(*n)).cloned().collect();
        for name in gone {
            copy.on_manifest(&name, ManifestEvent::Removed, at);
        }
        for (name, event) in manifests {
            copy.on_manifest(&name, event, at);
        }
        copy.reconcile(at, usize::MAX).actions
    }
}

impl Workload {
    /// The manifest its current sandbox was started from.
    pub fn running_manifest(&self) -> Option<&Manifest> {
        self.runs.as_ref().map(|d| d.manifest.as_ref())
    }
}
