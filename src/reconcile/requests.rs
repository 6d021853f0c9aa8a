//! `paddock start|stop|restart NAME`: what an operator's request does to
//! a workload, and the effects it needs.

use super::core::{Answer, Command, Core, Effect, Unknown};
use super::state::{State, Then};
use super::workload::{Cause, Clock, Happening, Replacing, Workload};
use crate::model::WorkloadName;

impl Core {
    pub fn on_request(
        &mut self,
        name: &WorkloadName,
        command: Command,
        at: Clock,
    ) -> Result<(Answer, Vec<Effect>), Unknown> {
        let w = match self.workloads.get_mut(name) {
            Some(w) if w.desired.is_some() => w,
            _ => return Err(Unknown(name.to_string())),
        };
        let version = w.desired_version().expect("checked above");
        let mut effects = Vec::new();
        let answer = match command {
            Command::Stop => {
                // A restart under way is held instead.
                w.replacing = None;
                let newly = w.hold.replace(version).is_none();
                if newly {
                    effects.push(Effect::Persist { name: name.clone() });
                    w.note(at.wall, Happening::Held);
                }
                match w.state {
                    State::Stopping { .. } => {
                        Self::redirect_stop(w, Then::Hold);
                        Answer::Stopping
                    }
                    s if s.has_sandbox() => {
                        Self::stop(w, Cause::StopAsked, Then::Hold, at, &mut effects);
                        Answer::Stopping
                    }
                    _ => {
                        w.state = State::Held { version };
                        if newly { Answer::Held } else { Answer::AlreadyHeld }
                    }
                }
            }
            Command::Start => {
                w.doubt = None;
                let released = w.hold.take().is_some();
                let revived = w.ended.take().is_some();
                if released || revived {
                    effects.push(Effect::Persist { name: name.clone() });
                    w.note(at.wall, Happening::Released(Cause::StartAsked));
                }
                match w.state {
                    State::Held { .. } | State::Exited { .. } | State::Failed { .. } => {
                        w.state = State::Idle;
                        w.reset_counts();
                        w.keep_counts(&mut effects);
                        w.cause = Some(Cause::StartAsked);
                        Answer::Starting
                    }
                    State::Stopping { .. } if released => {
                        Self::redirect_stop(w, Then::Replace);
                        Answer::Starting
                    }
                    State::Idle => Answer::Starting,
                    other => Answer::NotStopped(other.name()),
                }
            }
            Command::Restart => {
                w.doubt = None;
                if w.hold.take().is_some() | w.ended.take().is_some() {
                    effects.push(Effect::Persist { name: name.clone() });
                }
                w.reset_counts();
                w.cause = Some(Cause::RestartAsked);
                // Kept (before the stop signal goes) while the sandbox
                // stops: a successor that adopts it still running carries
                // the restart out.
                if let Some(version) = w.state.version().filter(|_| w.state.has_sandbox()) {
                    // Its run's init: known while it runs, or from a
                    // restart (an unhealthy run's) already under way.
                    let pid = w.state.pid().or(w.replacing.and_then(|r| r.pid));
                    w.replacing = Some(Replacing { version, unhealthy: false, halted: false, pid });
                    effects.push(Effect::Persist { name: name.clone() });
                }
                match w.state {
                    State::Stopping { .. } => Self::redirect_stop(w, Then::Replace),
                    s if s.has_sandbox() => Self::stop(w, Cause::RestartAsked, Then::Replace, at, &mut effects),
                    // Ended, failed, held or waiting: start at once.
                    _ => w.state = State::Idle,
                }
                w.keep_counts(&mut effects);
                Answer::Restarting
            }
        };
        Ok((answer, effects))
    }

    /// `paddock reload` (or SIGHUP): what failed because this host could
    /// not run it (a missing controller or plugin, fixed since, perhaps)
    /// is tried again. Returns their names.
    pub fn retry_host_failures(&mut self, at: Clock) -> (Vec<WorkloadName>, Vec<Effect>) {
        let (mut retried, mut effects) = (Vec::new(), Vec::new());
        for w in self.workloads.values_mut() {
            let host = w.error.as_ref().is_some_and(|e| e.blame == super::workload::Blame::Host);
            if matches!(w.state, State::Failed { .. }) && host && w.desired.is_some() && w.hold.is_none() {
                w.state = State::Idle;
                w.reset_counts();
                w.keep_counts(&mut effects);
                w.cause = Some(Cause::Reloaded);
                w.note(at.wall, Happening::Released(Cause::Reloaded));
                retried.push(w.name.clone());
            }
        }
        (retried, effects)
    }

    /// A stop already under way ends otherwise than first decided.
    pub(super) fn redirect_stop(w: &mut Workload, then: Then) {
        if let State::Stopping { then: t, .. } = &mut w.state
            && *t != Then::Forget
        {
            *t = then;
        }
    }
}
