//! What paddock tells the sandbox's init: everything it needs, already
//! decided, so the init only carries it out.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Sent once, with the detached mounts as file descriptors: the rootfs
/// first, then one per entry of `mounts`, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    pub hostname: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub user: u32,
    pub group: u32,
    pub rootfs_readonly: bool,
    pub mounts: Vec<InitMount>,
    pub private_network: bool,
    pub private_pid: bool,
    /// Bit mask of the capabilities the workload keeps.
    pub capabilities: u64,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    pub nofile: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitMount {
    pub target: PathBuf,
    /// Whether the source is a directory (else a file is created as the mount point).
    pub is_dir: bool,
}

/// What the init reports back, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitReport {
    /// The workload's command is running; `pid` is its pid in the sandbox's
    /// pid namespace (the init's host pid is what paddock reports).
    Started { pid: i32 },
    /// A setup step failed; nothing was started.
    SetupFailed { step: String, error: String },
    /// Everything was set up but the command could not be executed.
    ExecFailed { command: String, errno: i32 },
    /// The workload ended: with an exit code, or killed by a signal.
    Exited { code: Option<i32>, signal: Option<i32> },
}
