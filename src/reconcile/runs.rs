//! Runs: reconcile (what to start and stop), and what a sandbox's start,
//! failure, exit and deadlines do to its workload.

use std::time::{Duration, Instant};

use super::core::{Action, Core, DAEMON_RETRY, Effect, Pass, Verb};
use super::restart::{Decision, decide};
use super::state::{State, Then};
use super::workload::{
    Blame, Cause, Clock, Counts, Ended, File, Happening, StartFailure, StartTimedOut, Version, Workload,
};
use crate::model::{Exit, WorkloadName};

/// A restart delay at least this long is written with the workload's kept
/// state as it begins, for a successor that comes within it to wait out
/// the rest; a shorter one is not worth a write at every restart (a crash
/// loop at the 100 ms floor), and is over before a successor is up.
const KEPT_DELAY: Duration = Duration::from_secs(1);

impl Core {
    pub(super) fn stop(w: &mut Workload, cause: Cause, then: Then, at: Clock, effects: &mut Vec<Effect>) {
        let Some(version) = w.state.version() else { return };
        // The signal and timeout of the version that runs, not of a newer manifest.
        let stop = match &w.state {
            State::Starting { .. } | State::Running { .. } => w.running_manifest().map(|m| m.stop.clone()),
            _ => None,
        }
        .unwrap_or_default();
        let mut deadline = at.now + stop.timeout.as_std();
        // The stop a predecessor began of this run: its timeout goes on.
        if let Some((_, _, until)) =
            w.kept_stop.take().filter(|(v, pid, _)| *v == version && Some(*pid) == w.state.pid())
        {
            deadline = deadline.min(until.max(at.now));
        }
        let deadline = Some(deadline);
        let since = match w.state {
            State::Running { since, .. } => Some(since),
            State::Stopping { since, .. } => since,
            _ => None,
        };
        w.state = State::Stopping { version, then, deadline, pid: w.state.pid(), since };
        w.note(at.wall, Happening::Stopping { signal: stop.signal, cause: cause.clone() });
        effects.push(Effect::Stop { name: w.name.clone(), signal: stop.signal, cause });
    }

    fn start(w: &mut Workload, cause: Cause, timeout: Duration, at: Clock, effects: &mut Vec<Effect>) {
        let Some(desired) = w.desired.clone() else { return };
        // A restart; or the first start of a version a predecessor daemon
        // ran, which goes on from its count.
        let failures = match w.state {
            // A start the daemon could not make (out of descriptors, say)
            // is tried again, not restarted.
            State::Backoff { version, failures, .. } if version == desired.version => {
                if !w.error.as_ref().is_some_and(|e| e.blame == Blame::Daemon) {
                    w.restarts = w.restarts.saturating_add(1);
                }
                // A delay a predecessor began (`restore_delay`) holds its count.
                w.carried = None;
                failures
            }
            // One the predecessor stopped at its own stop begins again.
            _ => w.take_carried(desired.version).map_or(0, |c| {
                w.restarts = c.restarts.saturating_add(u32::from(!c.halted));
                if c.halted { 0 } else { c.failures }
            }),
        };
        w.state =
            State::Starting { version: desired.version, failures, begun: at.now, deadline: Some(at.now + timeout) };
        w.runs = Some(desired.clone());
        w.cause = None;
        w.note(at.wall, Happening::Starting(cause.clone()));
        effects.push(Effect::Start { name: w.name.clone(), desired, cause });
        // Its count, for a daemon that follows (written behind the start).
        w.keep_counts(effects);
    }

    /// Plans and begins what brings every workload in line with its
    /// manifest. At most `max_starts` sandboxes are starting at once (those
    /// already starting count): the rest are counted in `queued`, and the
    /// passes that follow their outcomes begin them.
    pub fn reconcile(&mut self, at: Clock, max_starts: usize) -> Pass {
        let mut pass = Pass::default();
        let mut forgotten = Vec::new();
        self.reconciled = Some(at.now);
        let mut starts = self.workloads.values().filter(|w| matches!(w.state, State::Starting { .. })).count();
        let timeout = self.start_timeout;
        let mut waits = super::order::waits(&self.workloads);
        for (name, w) in &mut self.workloads {
            // A restart under way ends with its sandbox (or was done, by a
            // daemon that died before writing so): kept no longer.
            let done = match (w.replacing, w.state) {
                (None, _) => false,
                (Some(r), State::Running { version, pid, .. }) => !r.of(version, pid),
                (Some(_), state) => !state.has_sandbox(),
            };
            if done {
                // A stop at the daemon's own stop whose sandbox is gone
                // (not adopted): its next start is the next daemon's, as
                // after a stop that ended (no failures, no restart).
                if let (Some(r), false) = (w.replacing, w.state.has_sandbox())
                    && r.halted
                {
                    let restarts = w.carried.filter(|c| c.version == r.version).map_or(0, |c| c.restarts);
                    w.carried = Some(Counts { version: r.version, failures: 0, restarts, halted: true });
                }
                w.replacing = None;
                pass.effects.push(Effect::Persist { name: name.clone() });
            }
            let desired = w.desired_version();
            let action = match (desired, w.state) {
                (None, State::Stopping { .. }) => None,
                (None, s) if s.has_sandbox() && self.files_seen => Some((Verb::Stop, Cause::Removed)),
                (None, _) if w.file == File::Absent && self.files_seen => {
                    forgotten.push((name.clone(), w.doubt.is_some()));
                    None
                }
                (None, _) => None,
                (Some(_), State::Idle) => Some((Verb::Start, w.cause.clone().unwrap_or(Cause::New))),
                (Some(_), State::Stopping { .. }) => None,
                // Held, and yet it runs: `paddock stop` was asked of a daemon
                // that died (or re-executed itself) before the sandbox ended,
                // and this one adopted it. The stop is carried out.
                (Some(_), s) if w.hold.is_some() && s.has_sandbox() => Some((Verb::Stop, Cause::StopAsked)),
                // A restart asked of a daemon that died (or re-executed
                // itself) before the sandbox ended: carried out.
                (Some(v), State::Running { version, pid, .. })
                    if v == version && w.replacing.is_some_and(|r| r.of(version, pid)) =>
                {
                    let cause = match w.replacing {
                        Some(r) if r.unhealthy => Cause::Unhealthy,
                        Some(r) if r.halted => Cause::ShutdownCut,
                        _ => Cause::RestartAsked,
                    };
                    Some((Verb::Restart, cause))
                }
                (Some(v), s) if s.version() != Some(v) => {
                    let cause = w.cause.clone().unwrap_or(Cause::Changed(Vec::new()));
                    Some((if s.has_sandbox() { Verb::Restart } else { Verb::Start }, cause))
                }
                (Some(_), State::Backoff { until, .. }) if until <= at.now => {
                    Some((Verb::Retry, Cause::RestartDelayOver))
                }
                (Some(_), _) => None,
            };
            let Some((verb, cause)) = action else {
                // Nothing to do (an edit that waited, reverted): it waits
                // for no one.
                if !w.waiting.is_empty() {
                    w.waiting.clear();
                    w.note(at.wall, Happening::Waiting(Vec::new()));
                }
                continue;
            };
            // A start (not a retry: its delay is over, and waiting would
            // leave it past due) waits for what it comes `after`; so does
            // the restart an edit makes, the running version running on
            // meanwhile (stopped first, it would be down for as long as
            // the new one waits: for good, after a misspelt name).
            let wait = match verb {
                Verb::Start => waits.remove(name).unwrap_or_default(),
                Verb::Restart if w.state.version() != desired => waits.remove(name).unwrap_or_default(),
                _ => Vec::new(),
            };
            // Said when whom it waits for changes; the reasons are kept fresh.
            if !wait.iter().map(|w| &w.name).eq(w.waiting.iter().map(|w| &w.name)) {
                w.note(at.wall, Happening::Waiting(wait.clone()));
                if !wait.is_empty() {
                    let cause = Cause::Waiting(wait.iter().map(|w| w.to_string()).collect());
                    pass.actions.push(Action { verb: Verb::Wait, name: name.clone(), cause });
                }
            }
            w.waiting = wait;
            if !w.waiting.is_empty() {
                continue;
            }
            match verb {
                Verb::Start | Verb::Retry if starts >= max_starts => {
                    pass.queued += 1;
                    continue;
                }
                Verb::Start | Verb::Retry => {
                    starts += 1;
                    Self::start(w, cause.clone(), timeout, at, &mut pass.effects);
                }
                Verb::Restart => {
                    let then = match (&cause, w.state) {
                        (Cause::Unhealthy, State::Running { failures, since, .. }) => {
                            Then::Unhealthy { failures, since }
                        }
                        // As the stop the daemon before began would have ended.
                        (Cause::ShutdownCut, _) => Then::Halt,
                        _ => Then::Replace,
                    };
                    // And why it starts again.
                    w.cause = Some(cause.clone());
                    Self::stop(w, cause.clone(), then, at, &mut pass.effects)
                }
                Verb::Stop => Self::stop(w, cause.clone(), Then::Forget, at, &mut pass.effects),
                Verb::Wait => continue,
            }
            pass.actions.push(Action { verb, name: name.clone(), cause });
        }
        // A predecessor's stop is carried out in the first pass that knows
        // the manifests, or not at all: never kept for a later stop.
        // (Looked for only while one was put back: not at every pass.)
        if self.files_seen && std::mem::take(&mut self.kept_stops) {
            self.workloads.values_mut().for_each(|w| w.kept_stop = None);
        }
        // Why each waits, as things stand after this pass's starts.
        if self.workloads.values().any(|w| !w.waiting.is_empty()) {
            for (name, fresh) in super::order::waits(&self.workloads) {
                if let Some(w) = self.workloads.get_mut(&name)
                    && !w.waiting.is_empty()
                    && !fresh.is_empty()
                {
                    w.waiting = fresh;
                }
            }
        }
        for (name, in_doubt) in forgotten {
            self.workloads.remove(&name);
            pass.effects.push(Effect::Forget { name, in_doubt });
        }
        pass
    }

    pub fn on_started(&mut self, name: &WorkloadName, pid: i32, latency: Duration, at: Clock) {
        let Some(w) = self.workloads.get_mut(name) else { return };
        if let State::Starting { version, failures, .. } = w.state {
            w.state = State::Running { version, since: at.now, failures, pid };
            w.begin_health(at.now);
        }
        w.error = None;
        w.start_latency = Some(latency);
        w.note(at.wall, Happening::Started { pid });
    }

    pub fn on_start_failed(
        &mut self,
        name: &WorkloadName,
        failure: StartFailure,
        at: Clock,
        jitter: f64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let timeout = self.start_timeout;
        let Some(w) = self.workloads.get_mut(name) else { return effects };
        // Killed for missing its deadline: that is why it failed, whatever the init's death looked like.
        let failure = match w.state {
            State::Starting { deadline: None, .. } => StartFailure::new(Blame::Workload, StartTimedOut(timeout)),
            _ => failure,
        };
        w.note(at.wall, Happening::StartFailed(failure.clone()));
        let blame = failure.blame;
        w.error = Some(failure);
        let runs = w.runs.take();
        match w.state {
            State::Starting { version, failures, .. } => match blame {
                Blame::Daemon => w.state = State::Backoff { version, until: at.now + DAEMON_RETRY, failures },
                Blame::Host => w.state = State::Failed { version, failures: failures.saturating_add(1) },
                // A start that failed is a run of no length that failed.
                Blame::Workload => {
                    let restart = runs.map(|d| d.manifest.restart.clone()).unwrap_or_default();
                    Self::decided(
                        w,
                        version,
                        failures,
                        Exit::Code(125),
                        Duration::ZERO,
                        &restart,
                        (at, at.now),
                        jitter,
                        &mut effects,
                    );
                }
            },
            State::Stopping { then, .. } => self.after_stop(name, then, &mut effects),
            _ => {}
        }
        self.continue_shutdown(at, &mut effects);
        effects
    }

    pub fn on_exit(&mut self, name: &WorkloadName, exit: Exit, at: Clock, jitter: f64) -> Vec<Effect> {
        self.on_exit_ended(name, exit, None, at, jitter)
    }

    /// As `on_exit`, for a run that `ended` before now, as its init said:
    /// it lasted until then, and its restart delay runs from then (it
    /// ended while no daemon ran). Everything else is as of `at`.
    pub fn on_exit_ended(
        &mut self,
        name: &WorkloadName,
        exit: Exit,
        ended: Option<Instant>,
        at: Clock,
        jitter: f64,
    ) -> Vec<Effect> {
        let ended = ended.filter(|e| *e <= at.now).unwrap_or(at.now);
        let mut effects = Vec::new();
        let Some(w) = self.workloads.get_mut(name) else { return effects };
        w.last_exit = Some(exit);
        w.note(at.wall, Happening::Exited(exit));
        w.health = None;
        let runs = w.runs.take();
        let restart = runs.map(|d| d.manifest.restart.clone()).unwrap_or_default();
        // A run a restart was asked of (of a daemon that died before its
        // sandbox ended) ends as that restart's stop would have.
        if let (State::Running { version, since, failures, pid }, Some(r)) = (w.state, w.replacing)
            && r.of(version, pid)
        {
            let (then, cause) = match r {
                _ if r.unhealthy => (Then::Unhealthy { failures, since }, Cause::Unhealthy),
                _ if r.halted => (Then::Halt, Cause::ShutdownCut),
                _ => (Then::Replace, Cause::RestartAsked),
            };
            w.state = State::Stopping { version, then, deadline: None, pid: Some(pid), since: Some(since) };
            w.cause = Some(cause);
        }
        match w.state {
            State::Running { version, since, failures, .. }
            | State::Stopping { version, then: Then::Unhealthy { failures, since }, .. } => {
                // Never before the run began: the init says when, and a
                // workload allowed to trace its init could say "at boot",
                // to be restarted at once, past the floor between starts.
                let ended = ended.max(since);
                let ran_for = ended.saturating_duration_since(since);
                let unhealthy = matches!(w.state, State::Stopping { .. });
                // An unhealthy run that the policy would call a success (it
                // exited 0 on its stop signal) still failed.
                let exit = match (w.state, exit) {
                    (State::Stopping { .. }, Exit::Code(0)) => Exit::Code(1),
                    _ => exit,
                };
                if w.hold.is_none() && w.desired.as_ref().is_some_and(|d| d.version == version) {
                    Self::decided(w, version, failures, exit, ran_for, &restart, (at, ended), jitter, &mut effects);
                    // Not restarted (`never`): it failed, whatever the policy calls an end.
                    if let (true, State::Exited { version }, Some(ended)) = (unhealthy, w.state, &mut w.ended) {
                        ended.failed = true;
                        w.state = State::Failed { version, failures: failures.saturating_add(1) };
                    }
                } else {
                    self.after_stop(name, Then::Replace, &mut effects);
                }
            }
            State::Starting { version, failures, begun, .. } => {
                let ended = ended.max(begun);
                Self::decided(w, version, failures, exit, Duration::ZERO, &restart, (at, ended), jitter, &mut effects);
            }
            State::Stopping { then, .. } => self.after_stop(name, then, &mut effects),
            _ => {}
        }
        self.continue_shutdown(at, &mut effects);
        effects
    }

    /// Whether `exit` (not yet applied) ends the workload for good (a
    /// one-shot done, or given up), and so must be kept before the sandbox
    /// is let go: a daemon that dies right after must not run it again.
    pub fn would_end(&self, name: &WorkloadName, exit: Exit, at: Clock) -> Option<Ended> {
        self.would_end_ended(name, exit, None, at)
    }

    /// As `would_end`, for a run that `ended` before now (`on_exit_ended`
    /// judges it so, and the two must agree).
    pub fn would_end_ended(&self, name: &WorkloadName, exit: Exit, ended: Option<Instant>, at: Clock) -> Option<Ended> {
        let ended = ended.filter(|e| *e <= at.now).unwrap_or(at.now);
        let w = self.workloads.get(name)?;
        // As `on_exit` judges it: a run stopped for being unhealthy failed,
        // whatever its exit; one a restart was asked of is no end.
        let (version, since, failures, unhealthy) = match w.state {
            State::Running { version, since, failures, pid } => match w.replacing.filter(|r| r.of(version, pid)) {
                Some(r) if !r.unhealthy => return None,
                Some(_) => (version, since, failures, true),
                None => (version, since, failures, false),
            },
            State::Stopping { version, then: Then::Unhealthy { failures, since }, .. } => {
                (version, since, failures, true)
            }
            _ => return None,
        };
        let judged = match (unhealthy, exit) {
            (true, Exit::Code(0)) => Exit::Code(1),
            _ => exit,
        };
        let restart = w.runs.as_ref().map(|d| d.manifest.restart.clone()).unwrap_or_default();
        match decide(&restart, judged, ended.saturating_duration_since(since), failures, 0.0) {
            Decision::Restart { .. } => None,
            Decision::GiveUp { .. } => Some(Ended { version, failed: true, exit: Some(exit) }),
            Decision::Done => Some(Ended { version, failed: unhealthy, exit: Some(exit) }),
        }
    }

    /// The restart policy's decision on a run that ended by itself.
    #[allow(clippy::too_many_arguments)]
    fn decided(
        w: &mut Workload,
        version: Version,
        failures: u32,
        exit: Exit,
        ran_for: Duration,
        restart: &crate::model::Restart,
        (at, ended): (Clock, Instant),
        jitter: f64,
        effects: &mut Vec<Effect>,
    ) {
        match decide(restart, exit, ran_for, failures, jitter) {
            Decision::Restart { delay, failures } => {
                // From the run's end (long before, when it ended while no
                // daemon ran).
                w.state = State::Backoff { version, until: ended + delay, failures };
                w.note(at.wall, Happening::RestartIn(delay));
                // Its count, for a daemon that follows (written behind);
                // and the delay's end, for one that comes within it.
                w.keep_counts(effects);
                if delay >= KEPT_DELAY {
                    w.persist(effects);
                }
            }
            Decision::GiveUp { failures } => {
                w.state = State::Failed { version, failures };
                w.ended = Some(Ended { version, failed: true, exit: Some(exit) });
                w.note(at.wall, Happening::GaveUp { failures });
                effects.push(Effect::Persist { name: w.name.clone() });
            }
            Decision::Done => {
                w.state = State::Exited { version };
                w.ended = Some(Ended { version, failed: false, exit: Some(exit) });
                effects.push(Effect::Persist { name: w.name.clone() });
            }
        }
    }

    /// A sandbox stopped on purpose has exited: what the facts say now
    /// decides what follows, whatever the stop was first for.
    fn after_stop(&mut self, name: &WorkloadName, then: Then, effects: &mut Vec<Effect>) {
        let Some(w) = self.workloads.get_mut(name) else { return };
        // Stopped by the daemon's own stop: its run did not fail, and the
        // next daemon's start of it is no restart (kept as `halted`).
        let halted = match (then, w.state.version()) {
            (Then::Halt, Some(version)) if w.restarts > 0 || w.kept_counts.is_some() => {
                Some(Counts { version, failures: 0, restarts: w.restarts, halted: true })
            }
            _ => None,
        };
        // The stop the daemon's own stop kept before its signal is over:
        // dropped, lest a later run of the version be taken for it.
        if then == Then::Halt && w.replacing.take_if(|r| r.halted).is_some() {
            effects.push(Effect::Persist { name: name.clone() });
        }
        w.state = match (w.desired.is_some(), w.hold, then) {
            (false, _, _) if w.file == File::Absent && self.files_seen => {
                let in_doubt = w.doubt.is_some();
                self.workloads.remove(name);
                effects.push(Effect::Forget { name: name.clone(), in_doubt });
                return;
            }
            (_, Some(version), _) => {
                // How the run the hold stopped ended, kept for `status`
                // after a restart of the daemon.
                w.persist(effects);
                State::Held { version }
            }
            _ => State::Idle,
        };
        if halted.is_some() && w.state == State::Idle {
            w.carried = halted;
            w.keep_counts(effects);
        }
    }

    /// Kills what missed its deadline: a stop past its timeout, a start
    /// whose init never reported.
    pub fn on_timer(&mut self, at: Clock) -> Vec<Effect> {
        let mut effects = Vec::new();
        for w in self.workloads.values_mut() {
            let starting = matches!(w.state, State::Starting { .. });
            let missed = match &mut w.state {
                State::Stopping { deadline, .. } | State::Starting { deadline, .. } => {
                    deadline.take_if(|d| *d <= at.now).is_some()
                }
                _ => false,
            };
            if missed {
                w.note(at.wall, Happening::Killed { starting });
                effects.push(Effect::Kill { name: w.name.clone() });
            }
        }
        self.due_probes(at, &mut effects);
        effects
    }

    /// Whether a start is under way, and the earliest deadline of those
    /// under way (None once each has been killed, its end awaited): what
    /// a wait for the starts to settle wakes for. Not a backoff's end,
    /// which only `reconcile` acts on.
    pub fn starting(&self) -> Option<Option<Instant>> {
        let deadlines: Vec<Option<Instant>> = self
            .workloads
            .values()
            .filter_map(|w| match w.state {
                State::Starting { deadline, .. } => Some(deadline),
                _ => None,
            })
            .collect();
        (!deadlines.is_empty()).then(|| deadlines.into_iter().flatten().min())
    }

    /// When `on_timer` or `reconcile` next has something to do: not a
    /// backoff's end the last reconcile saw (see `reconciled`), nor any
    /// while the daemon stops (it starts nothing).
    pub fn wake_at(&self) -> Option<Instant> {
        self.workloads
            .values()
            .filter_map(|w| match w.state {
                State::Backoff { until, .. } if self.halting || self.reconciled.is_some_and(|r| until <= r) => None,
                State::Backoff { until, .. } => Some(until),
                State::Stopping { deadline, .. } | State::Starting { deadline, .. } => deadline,
                State::Running { .. } => w.health.as_ref().and_then(|h| h.next),
                _ => None,
            })
            .min()
    }
}
