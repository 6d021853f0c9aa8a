//! Start order (`after`): a workload starts once each workload it names
//! is ready, and at shutdown it is stopped before them.

use std::collections::BTreeMap;

use super::core::{Core, Effect};
use super::state::{State, Then};
use super::workload::{Cause, Clock, Replacing, Workload};
use crate::model::WorkloadName;

/// A workload that waits for another: whom, and why that one is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub name: String,
    pub why: &'static str,
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.why)
    }
}

/// Whom each workload with `after` would wait for now, by name (a
/// workload that waits for no one maps to an empty list).
pub(super) fn waits(workloads: &BTreeMap<WorkloadName, Workload>) -> BTreeMap<WorkloadName, Vec<Wait>> {
    let mut found = BTreeMap::new();
    for w in workloads.values() {
        let Some(desired) = &w.desired else { continue };
        if desired.manifest.after.is_empty() {
            continue;
        }
        let waits = desired
            .manifest
            .after
            .iter()
            .filter_map(|dep| {
                let why = match WorkloadName::try_from(dep.as_str()).ok().and_then(|n| workloads.get(&n)) {
                    Some(other) => other.readiness().err()?,
                    None => "no manifest defines it",
                };
                Some(Wait { name: dep.clone(), why })
            })
            .collect();
        found.insert(w.name.clone(), waits);
    }
    found
}

impl Core {
    /// Shutdown: stops each sandbox that no other running workload comes
    /// `after`; the rest are stopped as those exit (`continue_shutdown`).
    pub(super) fn stop_next_layer(&mut self, at: Clock, effects: &mut Vec<Effect>) {
        let needed: Vec<String> = self
            .workloads
            .values()
            .filter(|w| w.state.has_sandbox())
            .filter_map(|w| w.running_manifest())
            .flat_map(|m| m.after.iter().cloned())
            .collect();
        // Only a cycle (which the scan refuses) could leave no one to stop first.
        let stuck = self
            .workloads
            .values()
            .filter(|w| w.state.has_sandbox())
            .all(|w| needed.iter().any(|n| n == w.name.as_str()) && !matches!(w.state, State::Stopping { .. }));
        for w in self.workloads.values_mut() {
            if !stuck && needed.iter().any(|n| n == w.name.as_str()) {
                continue;
            }
            match w.state {
                State::Stopping { then: Then::Halt, .. } => {}
                State::Stopping { .. } => Self::redirect_stop(w, Then::Halt),
                s if s.has_sandbox() => {
                    // Kept before the signal goes: a daemon that dies
                    // before the stop is over leaves the next one to start
                    // it again, not to take the end the signal caused for
                    // its own (`never` and `on-failure` would stay down).
                    if let (None, None, Some(version)) = (w.replacing, w.hold, s.version()) {
                        w.replacing = Some(Replacing { version, unhealthy: false, halted: true, pid: s.pid() });
                        effects.push(Effect::Persist { name: w.name.clone() });
                    }
                    Self::stop(w, Cause::Shutdown, Then::Halt, at, effects)
                }
                _ => {}
            }
        }
    }

    /// Stops every sandbox, each with its own signal and timeout, those
    /// that others come `after` once those others have exited.
    pub fn shutdown(&mut self, at: Clock) -> Vec<Effect> {
        self.halting = true;
        let mut effects = Vec::new();
        self.stop_next_layer(at, &mut effects);
        effects
    }

    /// After an exit during shutdown: the workloads it was keeping waiting.
    pub(super) fn continue_shutdown(&mut self, at: Clock, effects: &mut Vec<Effect>) {
        if self.halting {
            self.stop_next_layer(at, effects);
        }
    }
}
