//! The Pod Security Standards levels, and which one an exported pod
//! passes: the rules of baseline and restricted that the fields export
//! writes can break (kubernetes.io/docs/concepts/security/pod-security-standards).
//! tests/export.rs checks the output again with a checker of its own.

use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// A level of the Pod Security Standards, least strict first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// As the `pod-security.kubernetes.io/enforce` label spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    /// The level paddock's policies stand for: each built-in policy follows
    /// the standard of its name, and a manifest that passed several passed
    /// the strictest. An operator's own policy promises no level.
    pub fn of_policies<'a>(names: impl IntoIterator<Item = &'a str>) -> Level {
        names
            .into_iter()
            .map(|name| match name {
                "restricted" => Level::Restricted,
                "baseline" => Level::Baseline,
                _ => Level::Privileged,
            })
            .max()
            .unwrap_or(Level::Privileged)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The capabilities baseline allows a container to add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// A rule an exported pod breaks, with the level it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    HostNamespace(&'static str),
    Privileged,
    CapabilitiesBeyondBaseline(Vec<String>),
    /// A hostPath volume: its path, and the volume's name.
    HostPath {
        path: String,
        volume: String,
    },
    HostPort(i32),
    SeccompUnconfined,
    /// restricted: runAsNonRoot must be true (even under hostUsers: false,
    /// unless the cluster has the alpha UserNamespacesPodSecurityStandards gate).
    RunAsRoot,
    PrivilegeEscalation,
    CapabilitiesNotDropped,
    CapabilitiesBeyondRestricted(Vec<String>),
}

impl Violation {
    pub fn level(&self) -> Level {
        match self {
            Violation::HostNamespace(_)
            | Violation::Privileged
            | Violation::CapabilitiesBeyondBaseline(_)
            | Violation::HostPath { .. }
            | Violation::HostPort(_)
            | Violation::SeccompUnconfined => Level::Baseline,
            Violation::RunAsRoot
            | Violation::PrivilegeEscalation
            | Violation::CapabilitiesNotDropped
            | Violation::CapabilitiesBeyondRestricted(_) => Level::Restricted,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::HostNamespace(which) => write!(f, "{which} shares a host namespace"),
            Violation::Privileged => f.write_str("a privileged container"),
            Violation::CapabilitiesBeyondBaseline(caps) => write!(f, "capabilities beyond baseline's: {}", caps.join(", ")),
            Violation::HostPath { path, .. } => write!(f, "a hostPath volume ({path:?})"),
            Violation::HostPort(port) => write!(f, "a hostPort ({port})"),
            Violation::SeccompUnconfined => f.write_str("seccomp Unconfined"),
            Violation::RunAsRoot => f.write_str(
                "runAsNonRoot is not true (the container runs as uid 0, remapped under hostUsers: false, which restricted does not count)",
            ),
            Violation::PrivilegeEscalation => f.write_str("allowPrivilegeEscalation is not false"),
            Violation::CapabilitiesNotDropped => {
                f.write_str("capabilities are not dropped (drop: [ALL]); paddock kept the runtime's default set")
            }
            Violation::CapabilitiesBeyondRestricted(caps) => {
                write!(f, "capabilities beyond NET_BIND_SERVICE: {}", caps.join(", "))
            }
        }
    }
}

/// Every rule `pod` breaks, baseline's first.
pub fn violations(pod: &PodSpec) -> Vec<Violation> {
    let mut found = Vec::new();
    for (set, which) in [(pod.host_network, "hostNetwork"), (pod.host_pid, "hostPID"), (pod.host_ipc, "hostIPC")] {
        if set == Some(true) {
            found.push(Violation::HostNamespace(which));
        }
    }
    for volume in pod.volumes.iter().flatten() {
        if let Some(host) = &volume.host_path {
            found.push(Violation::HostPath { path: host.path.clone(), volume: volume.name.clone() });
        }
    }
    let pod_context = pod.security_context.as_ref();
    let pod_seccomp = pod_context.and_then(|c| c.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
    let pod_non_root = pod_context.and_then(|c| c.run_as_non_root);
    let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
    let mut restricted = Vec::new();
    for c in containers {
        container_violations(c, pod_seccomp, pod_non_root, &mut found, &mut restricted);
    }
    found.sort_by_key(Violation::level);
    restricted.retain(|v| !found.contains(v));
    found.extend(restricted);
    found
}

fn container_violations(
    c: &Container,
    pod_seccomp: Option<&str>,
    pod_non_root: Option<bool>,
    baseline: &mut Vec<Violation>,
    restricted: &mut Vec<Violation>,
) {
    let context = c.security_context.as_ref();
    if context.and_then(|s| s.privileged) == Some(true) {
        baseline.push(Violation::Privileged);
    }
    for port in c.ports.iter().flatten() {
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            baseline.push(Violation::HostPort(host_port));
        }
    }
    let seccomp = context.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()).or(pod_seccomp);
    if seccomp == Some("Unconfined") {
        baseline.push(Violation::SeccompUnconfined);
    }
    let capabilities = context.and_then(|s| s.capabilities.as_ref());
    let added: Vec<String> = capabilities.and_then(|c| c.add.clone()).unwrap_or_default();
    let beyond: Vec<String> = added.iter().filter(|c| !BASELINE_CAPABILITIES.contains(&c.as_str())).cloned().collect();
    if !beyond.is_empty() {
        baseline.push(Violation::CapabilitiesBeyondBaseline(beyond));
    }
    let non_root = context.and_then(|s| s.run_as_non_root).or(pod_non_root) == Some(true)
        && context.and_then(|s| s.run_as_user) != Some(0);
    if !non_root {
        restricted.push(Violation::RunAsRoot);
    }
    if context.and_then(|s| s.allow_privilege_escalation) != Some(false) {
        restricted.push(Violation::PrivilegeEscalation);
    }
    if !capabilities.and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|c| c == "ALL")) {
        restricted.push(Violation::CapabilitiesNotDropped);
    }
    let beyond: Vec<String> = added.into_iter().filter(|c| c != "NET_BIND_SERVICE").collect();
    if !beyond.is_empty() {
        restricted.push(Violation::CapabilitiesBeyondRestricted(beyond));
    }
}

/// The strictest level a pod with these violations passes.
pub fn passes(violations: &[Violation]) -> Level {
    match violations.iter().map(Violation::level).min() {
        None => Level::Restricted,
        Some(Level::Restricted) => Level::Baseline,
        Some(_) => Level::Privileged,
    }
}
