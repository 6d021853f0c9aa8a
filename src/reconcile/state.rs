//! A workload's state, as `paddock status` names it. Which state follows
//! which is decided in `core.rs`, by exhaustive matches.

use std::time::Instant;

use super::workload::Version;

/// What to do once a stopping sandbox has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Stay stopped: held by `paddock stop`.
    Hold,
    /// Start again: its manifest changed, or `paddock restart`.
    Replace,
    /// Forget it and free its ids: its manifest is gone.
    Forget,
    /// Nothing: the daemon is stopping.
    Halt,
    /// It was unhealthy: its restart policy decides, as for a failed run
    /// (`failures` and `since` are the run's).
    Unhealthy { failures: u32, since: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No sandbox and nothing decided: the next reconcile starts it when a
    /// valid manifest asks for it.
    Idle,
    /// A sandbox is being started; `deadline` is when its init must have
    /// reported (None once it was killed for missing it).
    Starting {
        version: Version,
        failures: u32,
        begun: Instant,
        deadline: Option<Instant>,
    },
    Running {
        version: Version,
        since: Instant,
        failures: u32,
        pid: i32,
    },
    /// Being stopped; killed at `deadline` (None once killed). Its
    /// sandbox's init runs until it ends (`pid`, unless it was stopped
    /// while starting).
    Stopping {
        version: Version,
        then: Then,
        deadline: Option<Instant>,
        pid: Option<i32>,
        /// When the run it stops began, if it had (how long it ran, for
        /// the log line of its end).
        since: Option<Instant>,
    },
    /// Waiting to be started again.
    Backoff {
        version: Version,
        until: Instant,
        failures: u32,
    },
    /// Ended and not to be restarted (`never`, or `on-failure` after success).
    Exited {
        version: Version,
    },
    /// Gave up: `max_retries` consecutive failures, or a host that cannot run it.
    Failed {
        version: Version,
        failures: u32,
    },
    /// Stopped by an operator; stays so until started or its manifest changes.
    Held {
        version: Version,
    },
}

impl State {
    /// The name `status` shows.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "stopped",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Exited { .. } => "exited",
            State::Failed { .. } => "failed",
            State::Held { .. } => "stopped",
        }
    }

    /// Every name `status` can show, in the order metrics list them.
    pub const NAMES: [&'static str; 9] =
        ["waiting", "starting", "running", "backoff", "stopping", "stopped", "exited", "failed", "invalid"];

    /// The manifest version it runs or last ran (None when idle).
    pub fn version(&self) -> Option<Version> {
        let mut state = *self;
        state.version_mut().copied()
    }

    /// Its version, to be changed in place.
    fn version_mut(&mut self) -> Option<&mut Version> {
        match self {
            State::Idle => None,
            State::Starting { version, .. }
            | State::Running { version, .. }
            | State::Stopping { version, .. }
            | State::Backoff { version, .. }
            | State::Exited { version }
            | State::Failed { version, .. }
            | State::Held { version } => Some(version),
        }
    }

    /// The same state of `to` where it is of `from` (the same manifest in
    /// other words: `Workload::retag`).
    pub fn retag(&mut self, from: Version, to: Version) {
        if let Some(version) = self.version_mut().filter(|v| **v == from) {
            *version = to;
        }
    }

    /// Its consecutive failed runs (0 where the state counts none).
    pub fn failures(&self) -> u32 {
        match *self {
            State::Starting { failures, .. }
            | State::Running { failures, .. }
            | State::Backoff { failures, .. }
            | State::Failed { failures, .. }
            | State::Stopping { then: Then::Unhealthy { failures, .. }, .. } => failures,
            _ => 0,
        }
    }

    /// Whether a sandbox exists for it (so it must be stopped before it is forgotten).
    pub fn has_sandbox(&self) -> bool {
        matches!(self, State::Starting { .. } | State::Running { .. } | State::Stopping { .. })
    }

    /// The host pid of its sandbox's init, while it runs.
    pub fn pid(&self) -> Option<i32> {
        match self {
            State::Running { pid, .. } => Some(*pid),
            State::Stopping { pid, .. } => *pid,
            _ => None,
        }
    }
}
