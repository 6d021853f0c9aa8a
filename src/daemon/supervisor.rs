//! The supervisor's shell: it feeds what happens (scans, sandbox events,
//! timers, requests) to the pure core and carries out the effects the
//! core returns, through the executor (sandboxes) and the store (ids and
//! kept state). Synchronous and generic over both, so unit tests drive the
//! real supervisor with fakes; the event loop (`event_loop.rs`) feeds it.

use crate::sandbox::process::InUse;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use super::executor::{Executor, SandboxEvent, StartRequest};
use super::kept::{Kept, Loaded};
use super::scan::{self, Snapshot};
use super::store::Store;
pub use super::view::Answered;
use crate::model::WorkloadName;
use crate::protocol::{PlannedAction, Report};
use crate::reconcile::{Blame, Clock, Command, Core, Effect, Pass, StartFailure, State};

/// Sandboxes starting at once (begun in one pass, or begun before and not
/// yet reported). Most of a start's time is the init's, in its own
/// process, and part of it is waiting (the kernel's RCU grace periods when
/// mounts are detached): 1000 workloads took 8.5 s to start here with 16
/// in flight and 7.2 s with 64 (bench/daemon.py). The daemon's own share of
/// a start is a few system calls, so a pass of 64 still answers other
/// events at once.
pub const STARTS_PER_PASS: usize = 64;

/// The daemon's own figures, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub reconciles: u64,
    pub reconcile_seconds: f64,
    pub last_reconcile_seconds: f64,
}

pub struct Supervisor<E: Executor, S: Store> {
    pub(super) core: Core,
    pub executor: E,
    pub store: S,
    pub(super) workloads: PathBuf,
    pub(super) state_dir: PathBuf,
    /// The last scan of the workloads directory.
    snapshot: Snapshot,
    /// Files that are invalid now, by file name, with their problems (a
    /// file whose name is no workload's is only here).
    pub(super) invalid: BTreeMap<String, String>,
    /// Why the workloads directory is refused (unsafe); changes are not
    /// applied meanwhile.
    pub(super) refused: Option<String>,
    /// The workloads directory cannot be watched now (inotify used up):
    /// its changes are seen at each resync alone (`Watch::watching`).
    pub unwatched: bool,
    /// Workloads kept from their records by a scan that was refused: the
    /// first scan taken removes those whose file is gone.
    kept_unseen: std::collections::BTreeSet<WorkloadName>,
    /// Workloads forgotten in doubt whose id slice was kept, processes
    /// running as its ids (`Kept::reserved`, restored across a restart):
    /// held in doubt if a manifest of that name comes back while they run.
    pub(super) reserved: BTreeSet<WorkloadName>,
    /// Kept state that could not be written (a full disk), written again
    /// at every pass until it is.
    unwritten: BTreeSet<WorkloadName>,
    /// Files of the workloads directory that are not manifests, said once
    /// each (again if one goes and comes back).
    pub(super) not_read: BTreeSet<String>,
    /// Files whose last read failed for want of descriptors or memory (or
    /// the directory's listing, then alone), each as a reload tells it:
    /// taken as they were, read again in a moment.
    pub(super) unread: Vec<String>,
    /// Valid files' warnings now, by file name (as `check` renders them):
    /// logged when a file's version is read, and in a reload's answer.
    pub(super) warnings: BTreeMap<String, String>,
    pub(super) stats: Stats,
    seed: u64,
}

/// Said of a file of the workloads directory that is not a manifest.
pub(super) const NOT_READ: &str =
    "not read: only NAME.toml files are workloads (rename it NAME.toml to run it, or move it out of the directory)";

impl<E: Executor, S: Store> Supervisor<E, S> {
    /// Who runs as `name`'s ids (its slice's), if anyone, or that it
    /// cannot be told; no one when every workload shares one slice, which
    /// tells nothing of `name`.
    fn ids_in_use(&self, name: &WorkloadName) -> Option<InUse> {
        match self.store.slice(name) {
            Some(slice) if !self.store.slices_shared() => crate::sandbox::process::in_use(&slice.uid),
            _ => None,
        }
    }

    /// A manifest of a workload forgotten in doubt, whose slice was kept
    /// (`reserved`), is back: held in doubt while processes still run as
    /// its ids, rather than started beside them.
    fn doubt_if_reserved(&mut self, name: &WorkloadName) {
        if !self.reserved.remove(name) {
            return;
        }
        // Its own sandbox (adopted: the mark outlived a start of it) is
        // what runs as its ids; else, no one running as them, the mark is
        // done with. Either way it leaves the disk.
        let adopted = self.core.get(name).is_some_and(|w| w.state.has_sandbox());
        let Some(in_use) = self.ids_in_use(name).filter(|_| !adopted) else {
            self.persist(name);
            return;
        };
        self.core.doubt(
            name,
            format!("its manifest came back while {in_use}, perhaps a sandbox of it a daemon that died left: held until `paddock start {name}`, once they are gone"),
        );
    }

    pub fn new(executor: E, store: S, workloads: PathBuf, state_dir: PathBuf, seed: u64) -> Self {
        Supervisor {
            core: Core::default(),
            executor,
            store,
            workloads,
            state_dir,
            snapshot: Snapshot::new(),
            invalid: BTreeMap::new(),
            refused: None,
            unwatched: false,
            kept_unseen: Default::default(),
            reserved: BTreeSet::new(),
            unwritten: BTreeSet::new(),
            not_read: BTreeSet::new(),
            unread: Vec::new(),
            warnings: BTreeMap::new(),
            stats: Stats::default(),
            seed: seed | 1,
        }
    }

    /// How long a start may take before it is killed (`start_timeout`).
    pub fn with_start_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.core = std::mem::take(&mut self.core).with_start_timeout(timeout);
        self
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// xorshift: a little jitter for restart delays, no dependency.
    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % 1_000_000) as f64 / 1_000_000.0
    }

    /// What the probes said of each run, for the next image at an upgrade
    /// (`upgrade::hand_on_runs`). How the run before each ended is in the
    /// kept state (images before it handed that on too: still read).
    pub fn runs_to_hand_on(&self) -> crate::daemon::upgrade::Runs<String> {
        let health = self.core.workloads().filter_map(|w| Some((w.name.to_string(), w.health_kept()?)));
        crate::daemon::upgrade::Runs { health: health.collect(), exits: Default::default() }
    }

    /// What a predecessor kept: holds, ends, and doubts; and, from the
    /// image before this one, its runs' health and previous runs' exits.
    pub fn restore(&mut self, loaded: Loaded, doubtful: Vec<WorkloadName>) {
        let handed = crate::daemon::upgrade::handed_runs(&self.state_dir);
        for (name, health) in handed.health {
            self.core.restore_health(&name, health);
        }
        // Kept until a scan says which have no file (the first may be refused).
        self.core.files_unread();
        for (name, kept) in loaded.kept {
            // Forgotten, its slice kept for processes that ran on as its
            // ids: no workload, but its name is held if its manifest comes
            // back while they run.
            if kept.reserved {
                tracing::warn!(workload = %name, "forgotten while processes ran as its ids: its id slice stays kept, given to no other workload, and a manifest of that name is held while they run");
                self.reserved.insert(name);
                continue;
            }
            self.core.restore(&name, kept.hold, kept.ended, kept.counts, kept.last_exit);
            self.core.restore_reads(&name, kept.reads);
            if let Some(replacing) = kept.replacing {
                self.core.restore_replacing(&name, replacing);
            }
            // Only the stop of a hold or a restart the successor carries
            // out (a stop for anything else, an operator's start since, is
            // not carried out: helper-115).
            if let Some(stop) = kept.stopping.filter(|_| kept.hold.is_some() || kept.replacing.is_some()) {
                let left = stop.until.left().unwrap_or_default();
                self.core.restore_stopping(&name, stop.version, stop.pid, Clock::read().now + left);
            }
            if let Some(left) = kept.delay.as_ref().and_then(|d| d.left()) {
                self.core.restore_delay(&name, left, Clock::read());
                if let Some(error) = kept.start_error {
                    self.core.restore_start_error(&name, error);
                }
            }
        }
        // From an image whose kept state held none for a running workload.
        for (name, exit) in handed.exits {
            self.core.restore_previous_exit(&name, exit);
        }
        for (name, why) in loaded.unreadable {
            tracing::error!(workload = %name, error = %why, "what was kept of this workload is unreadable; it is held until `paddock start {name}`");
            self.core.doubt(&name, format!("its kept state is unreadable ({why}); held until `paddock start {name}`"));
        }
        for name in doubtful {
            // Before the first scan: whether it still has a manifest is not known yet.
            tracing::error!(workload = %name, "its id slice was lost with the id table (its log says it ran here): if its manifest is still there, it is held until `paddock start {name}` gives it a new one; if not, it is forgotten");
            self.core.doubt(
                &name,
                format!(
                    "its id slice was lost with the id table; held until `paddock start {name}` gives it a new one"
                ),
            );
        }
        if let Some(why) = loaded.all_in_doubt {
            tracing::error!(error = %why, "the list of held workloads is unreadable; every workload is held until `paddock start NAME`");
            self.core
                .doubt_all(format!("the list of held workloads is unreadable ({why}); held until `paddock start`"));
        }
    }

    /// Whether it may run beside what is there cannot be told: it is
    /// held, saying `why`, until an operator starts it.
    pub fn doubt(&mut self, name: &WorkloadName, why: String) {
        self.core.doubt(name, why);
    }

    /// A sandbox that ran on without a daemon is this workload's again.
    pub fn adopt(
        &mut self,
        name: &WorkloadName,
        version: crate::reconcile::Version,
        pid: i32,
        since: Instant,
        at: Clock,
    ) {
        self.core.adopt(name, version, pid, since, at);
    }

    /// Applies a rescan's outcome. Returns the problems of the files found
    /// invalid in it.
    pub fn apply(&mut self, outcome: scan::Outcome, at: Clock) -> Vec<String> {
        // Before the files' versions: stopped or replaced, an adopted
        // sandbox is stopped as the version it runs says.
        for (name, desired) in outcome.adopted_runs {
            self.core.runs_adopted(&name, desired, at);
        }
        for (name, desired) in outcome.kept {
            tracing::warn!(workload = %name, "its file cannot be used: it runs on with the manifest its sandbox was started from");
            self.core.keep_adopted(&name, desired, at);
            if outcome.refused.is_some() {
                // No file of it was read: whether it still has one is
                // looked at in the first scan taken.
                self.kept_unseen.insert(name);
            }
        }
        if let Some(why) = outcome.refused {
            if outcome.again.is_some() {
                // Not read for want of descriptors or memory, not unsafe:
                // said by the event loop, which looks again in a moment.
                self.unread = vec![format!("{why}: what was read before stands, and it is read again in a moment")];
                return Vec::new();
            }
            self.unread.clear();
            if self.refused.as_ref() != Some(&why) {
                tracing::error!(dir = %self.workloads.display(), error = %why, "the workloads directory is refused: no change is applied until it is fixed; what runs keeps running");
            }
            self.refused = Some(why);
            return Vec::new();
        }
        if self.refused.take().is_some() {
            tracing::warn!(dir = %self.workloads.display(), "the workloads directory is safe again: changes apply");
        }
        self.core.files_read();
        for file in outcome.not_read.difference(&self.not_read) {
            tracing::warn!(file = %self.workloads.join(file).display(), "{NOT_READ}");
        }
        self.not_read = outcome.not_read;
        self.unread = outcome
            .unread
            .iter()
            .map(|(file, why)| format!("{}: {why}", self.workloads.join(file).display()))
            .collect();
        let mut invalid = Vec::new();
        // Carried out together (a manifest's effects are only what is kept
        // and what is reworded): what many files reworded at once keep is
        // written in one durable batch.
        let mut effects = Vec::new();
        for change in outcome.changes {
            match (&change.event, &change.warnings) {
                (crate::reconcile::ManifestEvent::Valid(_), Some(warnings)) => {
                    tracing::warn!(file = change.file, "valid, with warnings\n{warnings}");
                    self.warnings.insert(change.file.clone(), warnings.clone());
                }
                _ => drop(self.warnings.remove(&change.file)),
            }
            let more = match change.event {
                crate::reconcile::ManifestEvent::Invalid(ref problems) => {
                    tracing::error!(file = change.file, "invalid manifest\n{problems}");
                    self.invalid.insert(change.file.clone(), problems.clone());
                    invalid.push(problems.clone());
                    match &change.name {
                        Some(name) => self.core.on_manifest(name, change.event, at),
                        None => Vec::new(),
                    }
                }
                event => {
                    self.invalid.remove(&change.file);
                    match &change.name {
                        Some(name) => {
                            if matches!(event, crate::reconcile::ManifestEvent::Valid(_)) {
                                self.doubt_if_reserved(name);
                            }
                            self.core.on_manifest(name, event, at)
                        }
                        None => Vec::new(),
                    }
                }
            };
            effects.extend(more);
        }
        self.execute(effects, at);
        // Kept from its record while no scan was taken, and its file gone
        // by the first scan taken: removed. One whose file is being
        // written is looked at again in the next.
        for name in std::mem::take(&mut self.kept_unseen) {
            let file = format!("{name}.toml");
            if outcome.withheld.contains(&file) {
                self.kept_unseen.insert(name);
            } else if !outcome.snapshot.contains_key(&file) {
                let effects = self.core.on_manifest(&name, crate::reconcile::ManifestEvent::Removed, at);
                self.execute(effects, at);
            }
        }
        self.snapshot = outcome.snapshot;
        invalid
    }

    /// Plans and carries out one pass: at most `STARTS_PER_PASS` starts,
    /// the rest in the next (the loop answers other events between).
    pub fn reconcile(&mut self, at: Clock) -> Report {
        let started = Instant::now();
        self.write_unwritten();
        let Pass { effects, actions, queued } = self.core.reconcile(at, STARTS_PER_PASS);
        self.execute(effects, at);
        let took = started.elapsed().as_secs_f64();
        self.stats.reconciles += 1;
        self.stats.reconcile_seconds += took;
        self.stats.last_reconcile_seconds = took;
        Report {
            actions: actions
                .into_iter()
                .map(|a| PlannedAction { verb: a.verb, name: a.name.to_string(), why: a.cause.to_string() })
                .collect(),
            invalid: Vec::new(),
            queued,
            warnings: Vec::new(),
            refused: None,
        }
    }

    /// Returns whether the plan may have changed (a probe result that
    /// changed no health did not).
    pub fn on_sandbox(&mut self, event: SandboxEvent, at: Clock) -> bool {
        let mut changes = true;
        let effects = match event {
            SandboxEvent::Started { name, pid, latency } => {
                tracing::info!(workload = %name, action = "start", pid, latency = ?latency, "started");
                self.core.on_started(&name, pid, latency, at);
                Vec::new()
            }
            SandboxEvent::StartFailed { name, failure } => {
                tracing::error!(workload = %name, action = "start", error = %failure.error, "start failed");
                self.executor.reap(&name);
                let jitter = self.jitter();
                let effects = self.core.on_start_failed(&name, failure, at, jitter);
                // It was starting, so it was not failed before.
                self.say_if_failed(&name);
                effects
            }
            SandboxEvent::Ending { name, exit, ended, heard } => {
                // A one-shot's end, or a give-up, is on disk before the sandbox goes.
                if let Some(ended) = self.core.would_end_ended(&name, exit, ended, at) {
                    let kept = Kept {
                        slice: self.store.slice(&name),
                        hold: self.core.get(&name).and_then(|w| w.hold),
                        ended: Some(ended),
                        last_exit: None,
                        start_error: None,
                        stopping: None,
                        replacing: None,
                        counts: self.core.get(&name).and_then(|w| w.counts()),
                        delay: None,
                        reserved: false,
                        reads: self
                            .core
                            .get(&name)
                            .map(|w| w.reads_of(w.hold.into_iter().chain([ended.version])))
                            .unwrap_or_default(),
                    };
                    if let Err(e) = self.store.keep_now(&name, &kept) {
                        tracing::error!(workload = %name, error = %e, "cannot write how it ended; its sandbox keeps it until it is written");
                        // Heard once it is on disk: a daemon that dies before
                        // leaves the end with the init, for the next to hear.
                        self.store.once_kept(
                            &name,
                            Box::new(move || {
                                let _ = heard.send(());
                            }),
                        );
                        return true;
                    }
                }
                let _ = heard.send(());
                Vec::new()
            }
            SandboxEvent::Exited { name, exit, ended } => {
                // A run that ended while no daemon ran lasted until its
                // end, not until this one heard of it (`on_exit_ended`).
                let end = ended.filter(|e| *e <= at.now).unwrap_or(at.now);
                let ran_for = self.core.get(&name).and_then(|w| match w.state {
                    State::Running { since, .. } | State::Stopping { since: Some(since), .. } => {
                        Some(end.saturating_duration_since(since))
                    }
                    _ => None,
                });
                let ran_for = ran_for.map_or_else(|| "-".to_owned(), |d| format!("{:.3}s", d.as_secs_f64()));
                // A run that failed by itself is a warning (as systemd's
                // "Failed with result"); an end asked for, or a success, is not.
                let by_itself = self.core.get(&name).is_some_and(|w| matches!(w.state, State::Running { .. }));
                if by_itself && exit != crate::model::Exit::Code(0) {
                    tracing::warn!(workload = %name, action = "exit", %exit, ran_for, "exited");
                } else {
                    tracing::info!(workload = %name, action = "exit", %exit, ran_for, "exited");
                }
                self.executor.reap(&name);
                let jitter = self.jitter();
                let effects = self.core.on_exit_ended(&name, exit, ended, at, jitter);
                // It had a sandbox, so it was not failed before.
                self.say_if_failed(&name);
                effects
            }
            SandboxEvent::Probed { name, pid, ok, output } => {
                let before = self.core.get(&name).and_then(|w| w.health.as_ref().map(|h| h.status));
                let effects = self.core.on_probe(&name, pid, ok, output.clone(), at);
                let after = self.core.get(&name).and_then(|w| w.health.as_ref().map(|h| h.status));
                changes = after != before || !effects.is_empty();
                if after != before
                    && let Some(status) = after
                {
                    let last = output.lines().last().unwrap_or("");
                    match status {
                        crate::reconcile::HealthStatus::Unhealthy => {
                            tracing::warn!(workload = %name, health = status.name(), probe = last, "health changed")
                        }
                        _ => tracing::info!(workload = %name, health = status.name(), probe = last, "health changed"),
                    }
                }
                effects
            }
            SandboxEvent::Attached { name, outcome } => {
                if let Ok(a) = &outcome {
                    tracing::info!(workload = %name, network = %a.network, addresses = ?a.addresses(), "network attached");
                }
                match self.executor.attached(&name, outcome) {
                    Ok(()) => Vec::new(),
                    Err(failure) => {
                        tracing::error!(workload = %name, action = "start", error = %failure.error, "start failed");
                        let jitter = self.jitter();
                        self.core.on_start_failed(&name, failure, at, jitter)
                    }
                }
            }
        };
        self.execute(effects, at);
        changes
    }

    /// A run's end or a start's failure left `name` failed: said as an
    /// error with what to do (status and the metrics show it; the log did
    /// not). A start this host cannot make was said as it failed.
    fn say_if_failed(&self, name: &WorkloadName) {
        let Some(w) = self.core.get(name).filter(|w| matches!(w.state, State::Failed { .. })) else { return };
        let what_to_do = format!(
            "not restarted until `paddock start {name}` or its manifest changes; `paddock logs {name}` shows its output"
        );
        match w.history.back().map(|c| &c.what) {
            Some(crate::reconcile::Happening::GaveUp { failures }) => {
                let after = match failures {
                    1 => "1 failure".to_owned(),
                    n => format!("{n} consecutive failures"),
                };
                tracing::error!(workload = %name, failures, "gave up after {after}: {what_to_do}");
            }
            Some(crate::reconcile::Happening::StartFailed(f)) if f.blame == Blame::Host => {}
            // An unhealthy run its policy does not restart.
            _ => tracing::error!(workload = %name, "failed: {what_to_do}"),
        }
    }

    /// Deadlines: kills what did not stop (or start) in time.
    pub fn on_timer(&mut self, at: Clock) {
        let effects = self.core.on_timer(at);
        self.execute(effects, at);
    }

    pub fn wake_at(&self) -> Option<Instant> {
        self.core.wake_at()
    }

    /// `paddock start|stop|restart NAME`: the answer's text, or an error.
    pub fn request(&mut self, name: &str, command: Command, at: Clock) -> Result<String, String> {
        let unknown = || {
            format!(
                "no workload {name:?}: there is no valid manifest {} (see `paddock status`)",
                self.workloads.join(format!("{name}.toml")).display()
            )
        };
        let parsed = WorkloadName::try_from(name).map_err(|_| unknown())?;
        // Held in doubt with no sandbox of its own (a record unreadable): a
        // start beside processes still running as its ids would be a
        // second sandbox of it, sharing its ids. Asked again once they are gone.
        let doubted = self.core.get(&parsed).is_some_and(|w| w.doubt.is_some() && !w.state.has_sandbox());
        if doubted
            && matches!(command, Command::Start | Command::Restart)
            && let Some(in_use) = self.ids_in_use(&parsed)
        {
            // SIGKILL: a sandbox's init that reported its end waits for a
            // daemon to hear it, and takes no other signal.
            let what_to_do = match &in_use {
                InUse::By(pids) if pids.len() <= crate::sandbox::process::SHOWN => format!(
                    "stop them (`kill -9 {}`), then `paddock start {parsed}` again",
                    pids.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
                ),
                InUse::By(_) => format!("stop them, then `paddock start {parsed}` again"),
                InUse::Unknown(_) => "try again once /proc can be read".to_owned(),
            };
            return Err(format!(
                "{parsed} is held: {in_use}, perhaps a sandbox of it a daemon that died left; {what_to_do}"
            ));
        }
        let (answer, mut effects) = self.core.on_request(&parsed, command, at).map_err(|_| unknown())?;
        tracing::info!(workload = %parsed, action = ?command, "asked on the control socket");
        // What an operator asked is on disk before it is carried out: a
        // hold or a restart before the stop signal (or while a stop is
        // under way already), a release before the start. A daemon that
        // dies meanwhile leaves it to the next. (`execute` does the same
        // for what other paths keep before a stop signal.)
        let mut unwritten = None;
        if effects.iter().any(|e| matches!(e, Effect::Persist { name } if *name == parsed)) {
            effects.retain(|e| !matches!(e, Effect::Persist { name } if *name == parsed));
            unwritten = self.persist_with(&parsed, true).err();
        }
        self.execute(effects, at);
        let mut text = super::view::answer_text(&parsed, &answer);
        // Carried out all the same; the operator is told what a daemon
        // that dies (or a restart of it) would not know.
        if let Some(e) = unwritten {
            text.push_str(&format!(
                "\nwarning: this could not be written to the daemon's state ({e}): it holds while this daemon runs, and is written once it can be (the daemon's log says when); until then an upgrade is refused, and a daemon that dies loses it"
            ));
        }
        Ok(text)
    }

    /// Stops every sandbox (its own signal, then a kill at its timeout).
    pub fn shutdown(&mut self, at: Clock) {
        let effects = self.core.shutdown(at);
        self.execute(effects, at);
    }

    /// A shutdown out of time: every sandbox left, stopping or still
    /// waiting its turn, is killed now. Their exits end the shutdown.
    pub fn kill_all(&mut self) -> usize {
        let left = self.core.with_sandbox();
        for name in &left {
            tracing::warn!(workload = %name, action = "kill", "the shutdown's time is up: killed");
            self.executor.kill(name);
        }
        left.len()
    }

    pub fn all_stopped(&self) -> bool {
        !self.core.any_sandbox()
    }

    /// Carries out the core's effects, in order. Starts are given their id
    /// slices first, in one write of the id table.
    fn execute(&mut self, effects: Vec<Effect>, at: Clock) {
        let starting: Vec<&WorkloadName> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Start { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        let new: Vec<WorkloadName> =
            starting.iter().filter(|n| self.store.slice(n).is_none()).map(|n| (*n).clone()).collect();
        let mut slices = self.store.slices(&starting);
        for name in new {
            if self.store.slice(&name).is_some() {
                // A new slice is kept with the workload too (the id table's second source).
                self.persist(&name);
            }
        }
        // What is kept before a stop signal goes (a hold, a restart under
        // way) is on disk first: a daemon that dies right after leaves it
        // to the next, which adopts the sandbox still running.
        let stopping: Vec<WorkloadName> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Stop { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        // Written first, in one batch (the daemon's own stop stops every
        // workload at once), and on disk before any of those signals goes.
        // So is what is kept of a workload whose file was reworded (a
        // hold, an end, counts, a restart under way, now of the file's new
        // version), before its sandbox's record names that version: the
        // other way round, a daemon that died between the two left a
        // record and a file of one version and a hold of another, released
        // by its successor.
        let mut kept_first: Vec<WorkloadName> = Vec::new();
        for effect in &effects {
            match effect {
                Effect::Persist { name } if stopping.contains(name) => kept_first.push(name.clone()),
                Effect::Reworded { name, .. } => kept_first.push(name.clone()),
                _ => {}
            }
        }
        kept_first.sort();
        kept_first.dedup();
        self.persist_all_durably(&kept_first);
        for effect in effects {
            match effect {
                Effect::Start { name, desired, cause } => {
                    tracing::info!(workload = %name, action = "start", %cause, "starting");
                    let slice = slices.remove(&name).unwrap_or_else(|| {
                        Err(StartFailure::new(Blame::Daemon, std::io::Error::other("no id slice was allocated")))
                    });
                    let started = slice
                        .and_then(|slice| self.executor.start(StartRequest { name: &name, desired: &desired, slice }));
                    if let Err(failure) = started {
                        tracing::error!(workload = %name, action = "start", error = %failure.error, "start failed");
                        let jitter = self.jitter();
                        let more = self.core.on_start_failed(&name, failure, at, jitter);
                        self.execute(more, at);
                    }
                }
                Effect::Stop { name, signal, cause } => {
                    tracing::info!(workload = %name, action = "stop", %signal, %cause, "stopping");
                    self.executor.signal(&name, signal);
                }
                Effect::Kill { name } => {
                    tracing::warn!(workload = %name, action = "kill", "missed its deadline: killing every process of the sandbox");
                    self.executor.kill(&name);
                }
                // Written above, as the core has it after these effects.
                Effect::Persist { name } if kept_first.contains(&name) => {}
                Effect::Persist { name } => self.persist(&name),
                Effect::Reworded { name, from, desired } => {
                    tracing::info!(workload = %name, "manifest edited, the same once read (comments, formatting or defaults): nothing restarted");
                    // Its kept state not written (above): the record keeps
                    // its version, and a successor that adopts the sandbox
                    // compares its text with the file's again.
                    if !self.unwritten.contains(&name) {
                        self.executor.reworded(&name, from, &desired);
                    }
                }
                Effect::Probe { name, pid, manifest, probe, timeout } => {
                    self.executor.probe(&name, pid, &manifest, probe, timeout)
                }
                Effect::Forget { name, in_doubt } => {
                    self.unwritten.remove(&name);
                    // In doubt, a sandbox of it may run on unseen (its
                    // record unreadable, no cgroup): while processes run as
                    // its ids, they are given to no other workload.
                    let in_use = if in_doubt { self.ids_in_use(&name) } else { None };
                    let free = in_use.is_none();
                    match in_use {
                        None => tracing::info!(workload = %name, action = "forget", "forgotten: its ids are free"),
                        Some(in_use) => {
                            tracing::error!(
                                workload = %name,
                                action = "forget",
                                "its manifest is gone, but {in_use}, perhaps a sandbox of it a daemon that died left: its id slice stays taken, given to no other workload; stop them, and a manifest of that name added and removed again frees it"
                            );
                            self.reserved.insert(name.clone());
                        }
                    }
                    // Its logs are kept a day from now (`logline::GONE_LOGS_KEPT`).
                    crate::logline::mark_gone(&super::executor::log_path(&self.state_dir, &name));
                    if let Err(e) = self.store.forget(&name, free) {
                        let what = if free { "free its id slice" } else { "write that its id slice is kept" };
                        tracing::error!(workload = %name, error = %e, "cannot {what}");
                    }
                }
            }
        }
        // A network is kept while its workload runs or will run again
        // soon (a crash loop, a restart, a changed manifest about to start:
        // Idle with a manifest and no hold); else it is undone.
        let core = &self.core;
        self.executor.release_networks(&|name| {
            core.get(name).is_some_and(|w| match w.state {
                State::Starting { .. } | State::Running { .. } | State::Stopping { .. } | State::Backoff { .. } => true,
                State::Idle => w.desired.is_some() && w.hold.is_none(),
                _ => false,
            })
        });
    }

    /// Writes what is kept of a workload; a failure is said once and
    /// tried again at every pass until it succeeds.
    fn persist(&mut self, name: &WorkloadName) {
        let _ = self.persist_with(name, false);
    }

    /// `persist`, on disk before it returns when `durable` (unless the
    /// disk takes longer than `keep_soon` waits). Returns why a durable
    /// write failed (the writer goes on trying).
    fn persist_with(&mut self, name: &WorkloadName, durable: bool) -> std::io::Result<()> {
        let kept = self.kept_of(name);
        let written = match durable {
            true => self.store.keep_soon(name, &kept),
            false => self.store.keep(name, &kept),
        };
        self.said_written(name, durable, written)
    }

    /// `persist_with(.., true)` of each of `names`, in one batch.
    fn persist_all_durably(&mut self, names: &[WorkloadName]) {
        if names.is_empty() {
            return;
        }
        let all: Vec<(WorkloadName, Kept)> = names.iter().map(|n| (n.clone(), self.kept_of(n))).collect();
        for (name, written) in names.iter().zip(self.store.keep_all_soon(&all)) {
            let _ = self.said_written(name, true, written);
        }
    }

    fn kept_of(&self, name: &WorkloadName) -> Kept {
        Kept {
            slice: self.store.slice(name),
            hold: self.core.get(name).and_then(|w| w.hold),
            ended: self.core.get(name).and_then(|w| w.ended),
            last_exit: self.core.get(name).and_then(|w| w.exit_kept()),
            replacing: self.core.get(name).and_then(|w| w.replacing),
            counts: self.core.get(name).and_then(|w| w.counts()),
            delay: match self.core.get(name).map(|w| w.state) {
                Some(State::Backoff { until, .. }) => {
                    crate::daemon::kept::Delay::ending_in(until.saturating_duration_since(Instant::now()))
                }
                _ => None,
            },
            stopping: match self.core.get(name).filter(|w| w.hold.is_some() || w.replacing.is_some()).map(|w| w.state) {
                Some(State::Stopping { version, deadline: Some(deadline), pid: Some(pid), .. }) => {
                    crate::daemon::kept::Delay::ending_in(deadline.saturating_duration_since(Instant::now()))
                        .map(|until| crate::daemon::kept::Stopping { version, pid, until })
                }
                _ => None,
            },
            start_error: self
                .core
                .get(name)
                .filter(|w| matches!(w.state, State::Backoff { .. }))
                .and_then(|w| w.error.as_ref())
                .map(|e| e.error.to_string()),
            reserved: false,
            reads: self.core.get(name).map(|w| w.reads_kept()).unwrap_or_default(),
        }
    }

    /// Notes how a write of what is kept went (`unwritten`), and says
    /// when it fails and when it succeeds again.
    fn said_written(
        &mut self,
        name: &WorkloadName,
        durable: bool,
        written: std::io::Result<()>,
    ) -> std::io::Result<()> {
        match written {
            // Queued: the writer says when it fails, and when it writes again.
            Ok(()) if !durable => drop(self.unwritten.remove(name)),
            Ok(()) => {
                if self.unwritten.remove(name) {
                    tracing::warn!(workload = %name, "its kept state is written again");
                }
            }
            Err(ref e) => {
                if self.unwritten.insert(name.clone()) {
                    tracing::error!(workload = %name, error = %e, "cannot write its kept state (hold, end); retrying at every pass");
                }
            }
        }
        written
    }

    fn write_unwritten(&mut self) {
        for name in std::mem::take(&mut self.unwritten) {
            self.unwritten.insert(name.clone());
            self.persist(&name);
        }
    }

    /// `paddock reload`: what failed because this host could not run it is tried again.
    pub fn retry_host_failures(&mut self, at: Clock) {
        let (retried, effects) = self.core.retry_host_failures(at);
        for name in retried {
            tracing::info!(workload = %name, action = "start", "failed on this host before: trying again (reload)");
        }
        self.execute(effects, at);
    }
}
