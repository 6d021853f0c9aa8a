//! The workload manifest as written in `<name>.toml`: every key, its type,
//! its default. Doc comments become the schema's descriptions, which editors
//! show on hover, so they are written for operators.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::health::Health;
use super::named::{Capability, Signal};
use super::network::{Network, PortMapping};
use super::units::{Duration, Size};

/// A workload manifest: one long-running program and the sandbox it runs in.
/// The file's name without `.toml` is the workload's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "paddock workload manifest")]
pub struct Manifest {
    /// The program and its arguments, as an argv array; the first element is
    /// looked up inside the sandbox's root. Required. Each argument is at
    /// most 131071 bytes (the kernel's limit for one argument).
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub command: Vec<String>,

    /// Environment variables for the command. Nothing of paddock's own
    /// environment is passed on. Each `KEY=VALUE` is at most 131071 bytes
    /// (the kernel's limit for one string passed to a program).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = { "pattern": "^[^=]+$" }))]
    pub env: BTreeMap<String, String>,

    /// The working directory inside the sandbox.
    #[serde(default = "default_workdir")]
    #[schemars(regex(pattern = r"^/"))]
    pub workdir: PathBuf,

    /// The uid the command runs as, inside the sandbox (0 is the sandbox's
    /// root, which is an unprivileged user on the host). Remapped, an id
    /// below the slice's size (`[remap] slice_size`, 65536 by default).
    #[serde(default)]
    #[schemars(range(max = 4294967294u32))]
    pub user: u32,

    /// The gid the command runs as, inside the sandbox. Remapped, an id
    /// below the slice's size (`[remap] slice_size`, 65536 by default).
    #[serde(default)]
    #[schemars(range(max = 4294967294u32))]
    pub group: u32,

    /// The sandbox's hostname. Default: the workload's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$"))]
    pub hostname: Option<String>,

    /// The directory that becomes the sandbox's `/`.
    #[serde(default)]
    pub rootfs: Rootfs,

    /// Host directories or files made visible inside the sandbox (at most
    /// 128: each is a descriptor handed to the sandbox as it starts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub mounts: Vec<Mount>,

    /// Ports published on the host, as `docker run -p` writes them:
    /// "8080:80" makes the host's port 8080 (on every address) reach port
    /// 80 in the workload; "127.0.0.1:5353:53/udp" only on 127.0.0.1.
    /// Needs a network of its own: a manifest with ports and no
    /// `namespaces.network` gets "bridge". Two workloads cannot publish the
    /// same host port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ports: Vec<PortMapping>,

    /// Which namespaces the sandbox gets of its own.
    #[serde(default)]
    pub namespaces: Namespaces,

    /// Privileges: capabilities, no_new_privs and the seccomp filter.
    #[serde(default)]
    pub security: Security,

    /// Limits on memory, tasks, CPU and open files.
    #[serde(default)]
    pub resources: Resources,

    /// What to do when the command exits.
    #[serde(default)]
    pub restart: Restart,

    /// How the workload is stopped.
    #[serde(default)]
    pub stop: Stop,

    /// Workloads that must be running before this one starts (healthy,
    /// where they have a health check), by name. It waits, and `status`
    /// says for whom; at shutdown it is stopped before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = super::name::NAME_PATTERN)))]
    pub after: Vec<String>,

    /// A health check; without one, a running workload counts as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

fn default_workdir() -> PathBuf {
    PathBuf::from("/")
}

const fn yes() -> bool {
    true
}

/// The sandbox's root filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    /// A host directory that becomes `/` inside; "/" means the host's own root.
    #[serde(default = "host_root")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: PathBuf,

    /// Mount the root read-only. `/tmp` stays writable (a private tmpfs).
    #[serde(default = "yes")]
    pub readonly: bool,
}

fn host_root() -> PathBuf {
    PathBuf::from("/")
}

impl Default for Rootfs {
    fn default() -> Self {
        Self { path: host_root(), readonly: true }
    }
}

/// A bind mount of a host path into the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// An absolute host path; it must exist when the workload starts.
    #[schemars(regex(pattern = r"^/"))]
    pub source: PathBuf,

    /// An absolute path inside the sandbox; created if missing.
    #[schemars(regex(pattern = r"^/"))]
    pub target: PathBuf,

    /// Mount read-only.
    #[serde(default = "yes")]
    pub readonly: bool,

    /// Idmapped mount: a file owned by uid N on disk shows as N inside, and
    /// files created inside are owned by N on disk. The baseline policy
    /// allows it only for sources under the daemon's `volumes_root`.
    #[serde(default)]
    pub idmap: bool,

    /// Honour set-user-ID and set-group-ID bits and file capabilities of
    /// the files on this mount, where no_new_privileges is off (with it,
    /// the kernel ignores them). Off by default (the mount is `nosuid`);
    /// the baseline policy refuses it.
    #[serde(default)]
    pub setuid: bool,

    /// Allow opening device nodes on this mount. Off by default (the mount
    /// is `nodev`); the baseline policy refuses it.
    #[serde(default)]
    pub devices: bool,

    /// Allow the source to be, or to hold (a mount of `/`, say), the
    /// host's /proc, /sys or another kernel filesystem (cgroup, debugfs,
    /// tracefs, securityfs, bpf, ...), as a monitoring agent may need. Off
    /// by default: such a mount fails the start, saying where, since it
    /// shows the workload the host's processes, network and kernel
    /// settings, as a host pid namespace would. The baseline policy
    /// refuses it.
    #[serde(default)]
    pub kernel_filesystems: bool,
}

/// Namespaces. The defaults isolate everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// "remap": root inside is an unprivileged host uid from the workload's
    /// own slice of /etc/subuid. "host": no user namespace, so the
    /// workload's ids are the host's and its root is the host's root (as
    /// `docker run --userns=host`); only the privileged policy allows it,
    /// and no mount can be idmapped. Unless it is privileged, /proc's
    /// kernel knobs (sys, sysrq-trigger, bus, fs, irq) are read-only and a
    /// device node it makes cannot be opened, as under Docker.
    #[serde(default)]
    pub user: UserNamespace,

    /// "private" (the default without `ports`): a network namespace with
    /// only loopback. "bridge" (the default with `ports`): a namespace of
    /// its own on paddock's host bridge, with an address, outbound NAT and
    /// the published ports. "host": the host's network. Any other name:
    /// the CNI network of that name in the daemon's networks directory.
    #[serde(default)]
    pub network: Network,

    /// "private": the workload's processes see only each other. "host": the host's pids.
    #[serde(default)]
    pub pid: SharedOrPrivate,
}

impl Namespaces {
    /// Whether the sandbox has a user namespace of its own, its ids mapped
    /// to the workload's slice (`user = "remap"`).
    pub fn remapped(&self) -> bool {
        self.user == UserNamespace::Remap
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserNamespace {
    #[default]
    Remap,
    Host,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SharedOrPrivate {
    #[default]
    Private,
    Host,
}

/// Privileges inside the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Every capability (with namespaces.user = "host", every one paddock
    /// itself holds), no seccomp filter, nothing masked or read-only in
    /// /proc, nothing masked in /sys (which stays read-only), device nodes
    /// it makes usable in /dev and a writable
    /// rootfs, and the host's device
    /// nodes in /dev, down three directories (not its symlinks, nor
    /// /dev/pts, ptmx, shm, mqueue and hugepages, which stay the
    /// sandbox's own). Refused by the baseline policy whenever the user
    /// namespace is remapped.
    #[serde(default)]
    pub privileged: bool,

    /// Capabilities added to Docker's default set, without the CAP_ prefix,
    /// e.g. ["NET_BIND_SERVICE"].
    #[serde(default)]
    pub capabilities: Vec<Capability>,

    /// Set no_new_privs, so setuid binaries and file capabilities cannot
    /// raise privileges.
    #[serde(default = "yes")]
    pub no_new_privileges: bool,

    /// "default": refuse the system calls Docker's default profile refuses.
    /// "unconfined": no filter.
    #[serde(default)]
    pub seccomp: Seccomp,
}

impl Default for Security {
    fn default() -> Self {
        Self { privileged: false, capabilities: Vec::new(), no_new_privileges: true, seccomp: Seccomp::Default }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    #[default]
    Default,
    Unconfined,
}

/// Resource limits. A limit left out is not applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit for the whole sandbox, e.g. "256MiB"; past it the
    /// kernel's OOM killer ends the workload. Swap counts against it (no
    /// swap on cgroup v2; memory and swap together on v1); on a host with
    /// swap whose kernel does not account it (`swapaccount=0`,
    /// `cgroup.memory=noswap`) the start fails saying so, rather than let
    /// the workload swap past the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Size")]
    pub memory: Option<Size>,

    /// Maximum number of tasks (processes and threads) in the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1))]
    pub pids: Option<u32>,

    /// CPU time, in cores: 0.5 is half of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "f64", range(min = 0.01, max = 1024))]
    pub cpu: Option<f64>,

    /// RLIMIT_NOFILE: how many files the command may hold open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 1048576))]
    pub nofile: Option<u32>,
}

/// The restart policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// "always": restart whenever the command exits. "on-failure": restart
    /// after a non-zero exit or a signal. "never": run once.
    #[serde(default)]
    pub policy: RestartPolicy,

    /// With on-failure, restart at most this many times in a row after
    /// failures: the failure that follows the last of them gives up, so
    /// max_retries + 1 consecutive failures in all (0: never give up). A
    /// workload that gives up is shown as failed.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,

    /// The delay before the first restart, doubled after each consecutive failure.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,

    /// The longest delay between restarts.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Duration,

    /// A run at least this long resets the delay and the failure count.
    #[serde(default = "default_reset_after")]
    pub reset_after: Duration,
}

const fn default_max_retries() -> u32 {
    10
}
const fn default_backoff() -> Duration {
    Duration::from_millis(100)
}
const fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
const fn default_reset_after() -> Duration {
    Duration::from_secs(60)
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::default(),
            max_retries: default_max_retries(),
            backoff: default_backoff(),
            backoff_max: default_backoff_max(),
            reset_after: default_reset_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

/// How the workload is stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// The signal sent to the command first (through the sandbox's init,
    /// which passes on every signal but SIGSTOP and SIGCHLD: `check` warns
    /// of those two).
    #[serde(default = "default_stop_signal")]
    pub signal: Signal,

    /// How long to wait after the signal before every process of the
    /// sandbox is killed with SIGKILL. When the daemon itself stops, no
    /// longer than its `shutdown_timeout` (80 s by default) from the SIGTERM.
    #[serde(default = "default_stop_timeout")]
    pub timeout: Duration,
}

const fn default_stop_signal() -> Signal {
    Signal::Term
}
const fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Stop {
    fn default() -> Self {
        Self { signal: default_stop_signal(), timeout: default_stop_timeout() }
    }
}

impl Manifest {
    /// The manifest with every default made explicit, as policies see it:
    /// a key left out cannot slip past a rule.
    pub fn effective(&self, name: &str) -> Manifest {
        let mut effective = self.clone();
        effective.hostname.get_or_insert_with(|| name.to_owned());
        effective
    }

    /// Whether `other` is this manifest as workload `name` runs it, in
    /// other words: a default that depends on the name (`hostname`)
    /// written out or left out is the same (the others are filled in as
    /// a manifest is read).
    pub fn reads_as(&self, other: &Manifest, name: &str) -> bool {
        self == other || self.effective(name) == other.effective(name)
    }
}
