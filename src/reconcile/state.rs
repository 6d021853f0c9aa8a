//! What the supervisor knows of each workload, and how events move it
//! from state to state. Transitions are an exhaustive match returning a
//! Result: an event that cannot happen in a state is an error, not a panic.

use std::time::Instant;

use super::restart::{Decision, ExitKind, decide};
use crate::model::Restart;

/// Which manifest content a workload runs: a hash of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

/// A workload's state, as `paddock status` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A sandbox is being started.
    Starting {
        version: Version,
        failures: u32,
    },
    Running {
        version: Version,
        since: Instant,
        failures: u32,
    },
    /// Being stopped (removed, changed, or held by an operator).
    Stopping {
        version: Version,
    },
    /// Waiting to be restarted.
    Backoff {
        version: Version,
        until: Instant,
        failures: u32,
        last_exit: ExitKind,
    },
    /// Ended and not to be restarted (`never`, or `on-failure` after success).
    Exited {
        version: Version,
        last_exit: ExitKind,
    },
    /// Gave up after `max_retries` consecutive failures.
    Failed {
        version: Version,
        failures: u32,
        last_exit: ExitKind,
    },
    /// Stopped by an operator; stays so until started or its manifest changes.
    Held {
        version: Version,
    },
}

impl Observed {
    pub fn version(&self) -> Version {
        match *self {
            Observed::Starting { version, .. }
            | Observed::Running { version, .. }
            | Observed::Stopping { version }
            | Observed::Backoff { version, .. }
            | Observed::Exited { version, .. }
            | Observed::Failed { version, .. }
            | Observed::Held { version } => version,
        }
    }

    /// The name `status` shows.
    pub fn name(&self) -> &'static str {
        match self {
            Observed::Starting { .. } => "starting",
            Observed::Running { .. } => "running",
            Observed::Stopping { .. } => "stopping",
            Observed::Backoff { .. } => "backoff",
            Observed::Exited { .. } => "exited",
            Observed::Failed { .. } => "failed",
            Observed::Held { .. } => "stopped",
        }
    }

    /// Whether a sandbox exists for it (so it must be stopped before it is forgotten).
    pub fn has_sandbox(&self) -> bool {
        matches!(self, Observed::Starting { .. } | Observed::Running { .. } | Observed::Stopping { .. })
    }
}

/// An event that cannot happen in the state it arrived in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} while {state}")]
pub struct TransitionError {
    pub event: &'static str,
    pub state: &'static str,
}

impl Observed {
    /// The sandbox is up.
    pub fn started(self, now: Instant) -> Result<Observed, TransitionError> {
        match self {
            Observed::Starting { version, failures } => Ok(Observed::Running { version, since: now, failures }),
            other => Err(TransitionError { event: "started", state: other.name() }),
        }
    }

    /// The sandbox's process ended by itself. `jitter` in [0, 1).
    pub fn exited(
        self,
        exit: ExitKind,
        now: Instant,
        restart: &Restart,
        jitter: f64,
    ) -> Result<Observed, TransitionError> {
        match self {
            Observed::Running { version, since, failures } => {
                let ran_for = now.saturating_duration_since(since);
                Ok(match decide(restart, exit, ran_for, failures, jitter) {
                    Decision::Restart { delay, failures } => {
                        Observed::Backoff { version, until: now + delay, failures, last_exit: exit }
                    }
                    Decision::GiveUp { failures } => Observed::Failed { version, failures, last_exit: exit },
                    Decision::Done => Observed::Exited { version, last_exit: exit },
                })
            }
            // A sandbox that could not start counts as a failed run of no length.
            Observed::Starting { version, failures } => {
                Observed::Running { version, since: now, failures }.exited(exit, now, restart, jitter)
            }
            other => Err(TransitionError { event: "exited", state: other.name() }),
        }
    }

    /// The sandbox was stopped on purpose (removed, replaced or held): no restart.
    pub fn stopped(self) -> Result<(), TransitionError> {
        match self {
            Observed::Stopping { .. } => Ok(()),
            other => Err(TransitionError { event: "stopped", state: other.name() }),
        }
    }
}
