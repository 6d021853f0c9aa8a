//! What paddock tells the sandbox's init: everything it needs, already
//! decided, so the init only carries it out.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Sent once, with the detached mounts as file descriptors: for a
/// supervised sandbox the daemon's own end of the channel first (see
/// `supervised`), then the rootfs, then one per entry of `mounts`.
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
    /// The sandbox made its own network namespace (it mounts sysfs and
    /// brings up loopback); otherwise it shares the host's or joined one
    /// the daemon made, which its user namespace does not own.
    pub own_network: bool,
    pub private_pid: bool,
    /// Bit mask of the capabilities the workload keeps.
    pub capabilities: u64,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    /// Whether the host kernel's details in /proc and /sys/firmware are
    /// masked (`rootfs::MASKED_PROC`): not for a privileged workload, as
    /// Docker's `--privileged` is not masked (nested sandboxes need a
    /// /proc without covered entries to mount their own).
    pub mask_paths: bool,
    /// What the host mounts beneath /sys (relative to it, as bytes), to
    /// cover in a /sys that is the host's (`host_mounts`): found by the
    /// process that starts the sandbox; None for the init to read its own.
    #[serde(default)]
    pub sys_beneath: Option<Vec<Vec<u8>>>,
    /// The sandbox was born in a cgroup v2 of its own, at which the cgroup
    /// namespace the init unshares is rooted: it is mounted at
    /// /sys/fs/cgroup, read-only (as Docker and runc show a container its
    /// cgroup), where runtimes read the limits they size themselves to.
    #[serde(default)]
    pub cgroup2: bool,
    /// The host's device nodes in the sandbox's /dev (a privileged
    /// workload's, as Docker's `--privileged`); else only null, zero,
    /// full, random, urandom and tty.
    pub host_devices: bool,
    /// Device nodes are inert outside the ones bound in (`nodev` on the
    /// root and /dev): not for a privileged workload. With a user namespace
    /// most are inert anyway; without one (`user = "host"`) a node made
    /// with MKNOD would be the host's disk.
    pub nodev: bool,
    /// The kernel's knobs under /proc (`sys`, `sysrq-trigger`, `bus`, `fs`,
    /// `irq`) are read-only, as runc makes them: for a workload in the
    /// host's user namespace that is not privileged, whose root would
    /// otherwise be the host's root there (a user namespace's root cannot
    /// write them anyway).
    pub readonly_proc: bool,
    /// RLIMIT_NOFILE for the workload (soft, hard); the init itself may
    /// hold more, so it is set in the workload's process.
    pub nofile: Option<(u64, u64)>,
    /// Started by the daemon (not `paddock run`): the sandbox outlives a
    /// daemon that dies once it runs, the init copies the workload's output
    /// into the log (its own stdout), stamping each line, and keeps the
    /// daemon's end of the channel, through which a successor adopts it.
    pub supervised: bool,
}

/// In a supervised sandbox's init, the daemon's end of the channel: the
/// descriptor a successor daemon takes (pidfd_getfd) to adopt it.
pub const DAEMON_END_FD: i32 = 4;
/// And the init's own end.
pub const INIT_END_FD: i32 = 3;

/// The longest text a report carries: a report travels in one packet
/// (`Channel::recv_report`), and a command or a path can be far longer.
const REPORT_TEXT: usize = 4096;

impl InitReport {
    /// The report with its texts cut to `REPORT_TEXT` bytes.
    pub fn bounded(self) -> Self {
        let cut = |mut s: String| {
            if s.len() > REPORT_TEXT {
                let mut end = REPORT_TEXT;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push_str("...");
            }
            s
        };
        match self {
            InitReport::SetupFailed { step, error } => InitReport::SetupFailed { step: cut(step), error: cut(error) },
            InitReport::ExecFailed { command, errno } => InitReport::ExecFailed { command: cut(command), errno },
            InitReport::LogFailing { error } => InitReport::LogFailing { error: cut(error) },
            other => other,
        }
    }
}

/// What the daemon tells a running init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitCommand {
    /// The log was rotated: write to the descriptor sent with this from now on.
    NewLog,
    /// The workload's end was heard: the init may exit.
    Ack,
    /// Say again how the workload ended, if it has (a successor daemon
    /// asks, in case its predecessor read the end and died before it acked).
    Query,
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
    /// The log file passed its size: rotate it and send a new one.
    LogFull,
    /// Writing the log fails (a full disk): the output is dropped meanwhile.
    LogFailing { error: String },
    /// The log is written again; `lost` bytes were dropped.
    LogWritten { lost: u64 },
    /// The workload ended: with an exit code, or killed by a signal, at
    /// `at_us` (microseconds of the boot clock, `process::boot_clock`:
    /// a successor that reads this long after still knows how long the
    /// run lasted). A supervised init then waits for `InitCommand::Ack`
    /// (with no daemon, until a successor adopts it and reads this).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_us: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_of_a_long_command_fits_its_packet() {
        // A manifest's command may be 128 KiB; the init's report of it is
        // read from one packet (`Channel::recv_report`).
        let command = "é".repeat(64 << 10);
        let InitReport::ExecFailed { command: said, errno } =
            (InitReport::ExecFailed { command: command.clone(), errno: 2 }).bounded()
        else {
            panic!("the same report");
        };
        assert!(said.len() <= REPORT_TEXT + 3 && command.starts_with(said.trim_end_matches("...")), "{}", said.len());
        assert_eq!(errno, 2);
        let short = InitReport::SetupFailed { step: "mount".into(), error: "ENOENT".into() };
        assert_eq!(short.clone().bounded(), short);
    }
}
