//! Health checks in the core: when a running workload is probed, what a
//! probe's result does to it, and when it is unhealthy enough to restart.
//! The probes themselves are made by the shell (`Effect::Probe`).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use super::core::{Core, Effect};
use super::state::{State, Then};
use super::workload::{Cause, Clock, Happening, Version, Workload};
use crate::model::{OnUnhealthy, WorkloadName};

/// What the last probes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No probe has passed yet.
    Starting,
    Healthy,
    /// `retries` probes in a row failed (after the start period).
    Unhealthy,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }

    pub const NAMES: [&'static str; 3] = ["starting", "healthy", "unhealthy"];
}

/// One probe's outcome, as `status NAME` shows the last few.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub at: SystemTime,
    pub ok: bool,
    /// What it said: a command's output (its end), or why it failed.
    pub output: String,
}

/// How many probe results a workload keeps.
pub const KEPT_RESULTS: usize = 5;

/// The health of one run of a workload (a new run starts afresh).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: Status,
    /// Failed probes in a row that counted.
    pub streak: u32,
    /// When the next probe is due; None while one is under way.
    pub next: Option<Instant>,
    /// The run's start, for the start period.
    pub since: Instant,
    pub results: VecDeque<ProbeResult>,
}

/// What a daemon hands the next image at an upgrade of a run's health,
/// once a probe has said it (`upgrade::hand_on_runs`): the image that
/// adopts that run (the same version and init) takes it up where it was,
/// rather than show a healthy workload "starting" and log a change it did
/// not have (helper-109). Not kept on disk: a daemon that comes after a
/// crash probes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptHealth {
    pub version: Version,
    pub pid: i32,
    pub status: Status,
}

impl Health {
    fn new(since: Instant, interval: Duration) -> Self {
        Health { status: Status::Starting, streak: 0, next: Some(since + interval), since, results: VecDeque::new() }
    }
}

impl Workload {
    /// A run begins (started, or adopted): its checks begin afresh.
    pub(super) fn begin_health(&mut self, since: Instant) {
        self.kept_health = None;
        self.health = self.running_manifest().and_then(|m| m.health.as_ref()).map(|h| Health::new(since, h.period()));
    }

    /// What is kept of its run's health: what the probes said of the run
    /// under way, or what a predecessor kept of an adopted run whose
    /// checks have not begun yet (its manifest not read yet).
    pub fn health_kept(&self) -> Option<KeptHealth> {
        match (self.state, &self.health) {
            (State::Running { version, pid, .. }, Some(h)) if h.status != Status::Starting => {
                Some(KeptHealth { version, pid, status: h.status })
            }
            (State::Running { .. }, None) => self.kept_health,
            _ => None,
        }
    }

    /// Whether a workload `after` it may start: it runs, and is healthy
    /// where it has a health check. Else why not, for `status`.
    pub fn readiness(&self) -> Result<(), &'static str> {
        match (&self.state, &self.health) {
            (State::Running { .. }, None) => Ok(()),
            (State::Running { .. }, Some(h)) if h.status == Status::Healthy => Ok(()),
            (State::Running { .. }, Some(h)) => Err(h.status.name()),
            _ if self.desired.is_none() => Err("no manifest defines it"),
            _ => Err(self.state_name()),
        }
    }
}

impl Core {
    /// The probes that are due now (each becomes an `Effect::Probe`).
    pub(super) fn due_probes(&mut self, at: Clock, effects: &mut Vec<Effect>) {
        for w in self.workloads.values_mut() {
            let State::Running { pid, .. } = w.state else { continue };
            if w.health.as_ref().and_then(|h| h.next).is_none_or(|next| next > at.now) {
                continue;
            }
            let Some(manifest) = w.runs.as_ref().map(|d| d.manifest.clone()) else { continue };
            let Some(spec) = manifest.health.clone() else { continue };
            let Some(probe) = spec.probe() else { continue };
            if let Some(h) = &mut w.health
                && h.next.take_if(|next| *next <= at.now).is_some()
            {
                let timeout = spec.timeout.as_std();
                effects.push(Effect::Probe { name: w.name.clone(), pid, manifest, probe, timeout });
            }
        }
    }

    /// A probe's result for the run with init `pid` (a result for an
    /// earlier run is dropped). Returns the effects: a stop when the
    /// workload has become unhealthy and is to be restarted.
    pub fn on_probe(&mut self, name: &WorkloadName, pid: i32, ok: bool, output: String, at: Clock) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(w) = self.workloads.get_mut(name) else { return effects };
        let State::Running { failures, since, pid: running, .. } = w.state else { return effects };
        let Some(spec) = w.running_manifest().and_then(|m| m.health.clone()) else { return effects };
        let Some(h) = w.health.as_mut().filter(|_| running == pid) else { return effects };
        if h.results.len() == KEPT_RESULTS {
            h.results.pop_front();
        }
        h.results.push_back(ProbeResult { at: at.wall, ok, output });
        h.next = Some(at.now + spec.period());
        let before = h.status;
        if ok {
            h.streak = 0;
            h.status = Status::Healthy;
        } else if h.status != Status::Starting || at.now >= h.since + spec.start_period.as_std() {
            h.streak += 1;
            if h.streak >= spec.retries {
                h.status = Status::Unhealthy;
            }
        }
        let now = h.status;
        if now != before {
            w.note(at.wall, Happening::Health(now));
        }
        if now == Status::Unhealthy && before != Status::Unhealthy && spec.on_unhealthy == OnUnhealthy::Restart {
            // Kept while the sandbox stops, as `paddock restart`'s is.
            if let Some(version) = w.state.version() {
                w.replacing =
                    Some(super::workload::Replacing { version, unhealthy: true, halted: false, pid: Some(pid) });
                w.persist(&mut effects);
            }
            let then = Then::Unhealthy { failures, since };
            Self::stop(w, Cause::Unhealthy, then, at, &mut effects);
        }
        effects
    }
}
