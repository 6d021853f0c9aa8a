//! `plan(desired, observed, now)`: the actions that bring what runs in line
//! with what the manifests ask for. Pure: no I/O, no clock. Level-triggered
//! and idempotent: run it after any event or tick; a workload whose
//! manifest did not change is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::state::{Observed, Version};
use crate::model::WorkloadName;

/// Why an action is taken, for logs and `paddock reload`'s report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A manifest appeared.
    New,
    /// Its manifest changed.
    ManifestChanged,
    /// Its manifest was removed.
    Removed,
    /// Its restart delay is over.
    BackoffElapsed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a sandbox for this version.
    Start { name: WorkloadName, version: Version, reason: Reason },
    /// Stop the running sandbox, then start this version.
    Restart { name: WorkloadName, version: Version, reason: Reason },
    /// Stop the running sandbox for good.
    Stop { name: WorkloadName, reason: Reason },
    /// Drop a workload that has no sandbox and no manifest (and free its ids).
    Forget { name: WorkloadName },
}

impl Action {
    /// The action's name in log lines (`action=start`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Start { .. } => "start",
            Action::Restart { .. } => "restart",
            Action::Stop { .. } => "stop",
            Action::Forget { .. } => "forget",
        }
    }

    pub fn name(&self) -> &WorkloadName {
        match self {
            Action::Start { name, .. }
            | Action::Restart { name, .. }
            | Action::Stop { name, .. }
            | Action::Forget { name } => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The earliest restart delay still running: plan again then.
    pub wake_at: Option<Instant>,
}

pub fn plan(
    desired: &BTreeMap<WorkloadName, Version>,
    observed: &BTreeMap<WorkloadName, Observed>,
    now: Instant,
) -> Plan {
    let mut out = Plan::default();
    let names: BTreeSet<&WorkloadName> = desired.keys().chain(observed.keys()).collect();
    for name in names {
        let action = match (desired.get(name), observed.get(name)) {
            (None, None) => None,
            (Some(&version), None) => Some(Action::Start { name: name.clone(), version, reason: Reason::New }),
            (None, Some(state)) => match state {
                // Already on its way out.
                Observed::Stopping { .. } => None,
                s if s.has_sandbox() => Some(Action::Stop { name: name.clone(), reason: Reason::Removed }),
                _ => Some(Action::Forget { name: name.clone() }),
            },
            (Some(&version), Some(state)) if state.version() != version => match state {
                // The stop finishes first; the next plan starts the new version.
                Observed::Stopping { .. } => None,
                s if s.has_sandbox() => {
                    Some(Action::Restart { name: name.clone(), version, reason: Reason::ManifestChanged })
                }
                // Ended, failed, held or waiting: a new manifest revives it.
                _ => Some(Action::Start { name: name.clone(), version, reason: Reason::ManifestChanged }),
            },
            (Some(&version), Some(state)) => match *state {
                Observed::Backoff { until, .. } if until <= now => {
                    Some(Action::Start { name: name.clone(), version, reason: Reason::BackoffElapsed })
                }
                Observed::Backoff { until, .. } => {
                    out.wake_at = Some(out.wake_at.map_or(until, |w| w.min(until)));
                    None
                }
                _ => None,
            },
        };
        out.actions.extend(action);
    }
    out
}
