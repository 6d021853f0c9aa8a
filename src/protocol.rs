//! The control socket's protocol, shared by the daemon and its clients:
//! one JSON request line, one JSON answer line. `{"cmd": "status"}`,
//! `{"cmd": "stop", "name": "web"}`, ... New commands are new `cmd`
//! values; new fields are optional, so an older client and a newer daemon
//! still understand each other.
//!
//! Also what `paddock status --json` prints: one object per workload.

use serde::{Deserialize, Serialize};

pub use crate::reconcile::Verb;

/// The longest request line the daemon reads; a longer one is refused.
pub const MAX_REQUEST: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_start: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub name: String,
    /// starting, running, backoff, stopping, stopped, exited, failed or invalid.
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
    /// `error` is its manifest's (the file is invalid; what runs, if
    /// anything, is the last valid version).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_invalid: bool,
    /// While `error` is the file's: the last valid version's start error,
    /// if its start failed (elsewhere it is `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
    /// Seconds since the sandbox started, while it runs.
    pub uptime_seconds: Option<u64>,
    pub manifest: String,
    /// Held stopped by `paddock stop` until `paddock start` or a manifest change.
    #[serde(default)]
    pub held: bool,
    /// The CNI network it is attached to (None: private, host, or not attached now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Its addresses on that network, in CIDR form ("10.77.0.5/16").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The ports it publishes, as "127.0.0.1:8080:80/tcp".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// While it runs with a health check: starting, healthy or unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Whom it waits for before it starts (`after`), each with why:
    /// "db (starting)".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// One health probe's outcome, for `paddock status NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// RFC 3339, UTC.
    pub time: String,
    pub ok: bool,
    /// The end of a command's output, or why the probe failed.
    pub output: String,
}

/// One state change, for `paddock status NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// RFC 3339, UTC.
    pub time: String,
    pub event: String,
}

/// Everything about one workload (`paddock status NAME`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadDetail {
    #[serde(flatten)]
    pub status: WorkloadStatus,
    /// The manifest in force (defaults filled in, as the policies saw it), as TOML.
    pub effective_manifest: Option<String>,
    /// Its recent state changes, oldest first.
    pub changes: Vec<Change>,
    /// Where its output is kept.
    pub log: String,
    /// The sandbox's start (spawn to the workload's exec), milliseconds.
    pub start_latency_ms: Option<f64>,
    /// The last health probes of this run, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeOutcome>,
}

/// One thing a reconcile did or would do: `start web (manifest added)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub verb: Verb,
    pub name: String,
    /// Why, as a person reads it: "manifest changed: command and hostname".
    pub why: String,
}

/// What a rescan did (`paddock reload`) or would do (`paddock plan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub actions: Vec<PlannedAction>,
    /// Files that are not valid, each with its problems as `check` prints them.
    pub invalid: Vec<String>,
    /// Starts left for the next passes (a burst is started 16 at a time).
    #[serde(default)]
    pub queued: usize,
    /// What would fail on this host although the file is valid: a limit
    /// whose cgroup controller the host lacks ("web.toml: memory limit needs ...").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why the workloads directory is refused (unsafe): nothing of it was
    /// applied, what runs keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A request on the control socket: one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Every workload, or everything about one.
    Status {
        #[serde(default)]
        name: Option<String>,
    },
    /// Where a workload's output is kept.
    Logs { name: String },
    /// Release a workload held by `stop` (and revive it if it ended or failed).
    Start { name: String },
    /// Stop a workload and hold it stopped.
    Stop { name: String },
    /// Stop and start again; revives a failed workload.
    Restart { name: String },
    /// Rescan now (as SIGHUP) and report what changed.
    Reload,
    /// What the daemon would do if the workloads directory looked like `dir`.
    Plan {
        #[serde(default)]
        dir: Option<String>,
    },
    /// Re-execute the daemon's binary as it is on disk now (after a package
    /// upgrade replaced it), keeping every workload running.
    Upgrade,
    /// Run a command inside a running workload (`paddock exec`). Sent with
    /// three descriptors (SCM_RIGHTS): its stdin, stdout and stderr. The
    /// daemon answers `Entered`, then `Ended`; meanwhile the client may
    /// send `ExecInput` lines (signals to pass on).
    Exec(ExecRequest),
    /// Every workload now, then again at each change (`status --watch`):
    /// one `Status` answer line per change, until the client goes.
    Watch,
    /// What `status` says below its table of workloads: what the daemon
    /// does not apply or read now (the directory refused, files that are
    /// no workload's), which no row shows.
    Notes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub user: Option<u32>,
    #[serde(default)]
    pub group: Option<u32>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Its stdin is a terminal (a pseudo-terminal the client made).
    #[serde(default)]
    pub tty: bool,
}

/// What an `exec` client sends while its command runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecInput {
    /// A signal number to pass on to the command.
    pub signal: i32,
}

/// The answer: one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Status(Vec<WorkloadStatus>),
    Detail(Box<WorkloadDetail>),
    /// `Notes`: one line each.
    Notes(Vec<String>),
    Logs {
        path: String,
    },
    /// An action was taken; the text says which.
    Done(String),
    Reloaded(Report),
    Plan(Report),
    Error(String),
    /// `exec`: the command was started (the host pid of the process that
    /// entered the sandbox).
    Entered {
        pid: i32,
    },
    /// `exec`: the command ended, with this exit status (128 + N when
    /// killed by signal N; 125-127 when it could not be started).
    Ended {
        code: i32,
    },
}
