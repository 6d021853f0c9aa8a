//! What `paddock status --json` prints: one object per workload known from
//! a manifest, with the fields DESIGN.md lists.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_start: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub name: String,
    /// starting, running, backoff, stopping, stopped, exited or failed.
    pub state: String,
    /// Host pid of the sandbox's init.
    pub pid: Option<i32>,
    pub uid_map: Option<IdMap>,
    pub gid_map: Option<IdMap>,
    /// Restarts since the manifest last changed.
    pub restarts: u32,
    /// The last run's exit code, or its signal's name, or "oom-killed".
    pub last_exit: Option<serde_json::Value>,
    /// The current validation or start error.
    pub error: Option<String>,
    /// Seconds since the sandbox started, while it runs.
    pub uptime_seconds: Option<u64>,
    pub manifest: String,
}

/// A request on the control socket: one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
}

/// The answer: one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Status(Vec<WorkloadStatus>),
    Error(String),
}
