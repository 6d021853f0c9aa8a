//! The supervisor's pure core: one record per workload (`Workload`), and
//! the transitions that change it (`Core`), each returning the effects the
//! shell carries out. No I/O, no clock, no nix.

mod core;
mod health;
mod order;
mod requests;
mod restart;
mod runs;
mod state;
mod workload;

pub use core::{
    Action, Answer, Command, Core, DAEMON_RETRY, Effect, ManifestEvent, Pass, START_TIMEOUT, Unknown, Verb,
    changed_keys,
};
pub use health::{Health, KEPT_RESULTS, KeptHealth, ProbeResult, Status as HealthStatus};
pub use order::Wait;
pub use restart::{Decision, RESTART_FLOOR, decide};
pub use state::{State, Then};
pub use workload::{
    Blame, Cause, Change, Clock, Counts, Desired, Ended, File, HISTORY, Happening, Reads, Replacing, StartFailure,
    StartTimedOut, Version, Workload, or_none,
};
