//! The supervisor's pure core: desired state (from manifests) and observed
//! state (from sandboxes) in, actions out. No I/O, no clock, no nix.

mod plan;
mod restart;
mod state;

pub use plan::{Action, Plan, Reason, plan};
pub use restart::{Decision, ExitKind, decide};
pub use state::{Observed, TransitionError, Version};
