//! What a paddock manifest says that its Kubernetes objects cannot: each
//! item is printed at the top of the workload's object and on stderr, so
//! nothing is dropped in silence.

use std::fmt;
use std::path::PathBuf;

use crate::model::{Duration, Manifest, PortMapping, RestartPolicy, Seccomp, Signal};
use crate::validate::key_name;

use super::pss::{Level, Violation};

/// The least grace period the kubelet gives a stopping container.
pub const MIN_GRACE_SECONDS: i64 = 2;

/// One thing paddock did that the exported objects do not, or do only on
/// some clusters.
#[derive(Debug, Clone, PartialEq)]
pub enum Unsupported {
    /// The root was a host directory; a container's root is its image.
    Rootfs { path: PathBuf, image: String },
    /// `resources.pids`: Kubernetes limits tasks per node (the kubelet's
    /// podPidsLimit), not per pod.
    PidsLimit(u32),
    /// `resources.nofile`: no field sets a container's RLIMIT_NOFILE.
    Nofile(u32),
    /// The backoff's shape: the kubelet's is fixed (10 s doubling to 5 min,
    /// reset after 10 min of running).
    Backoff { backoff: Duration, backoff_max: Duration, reset_after: Duration },
    /// `max_retries` with on-failure: a pod never gives up.
    MaxRetries(u32),
    /// A Deployment's pods restart always, whatever the manifest said.
    DeploymentRestarts(RestartPolicy),
    /// `stop.signal` other than SIGTERM: `lifecycle.stopSignal` is honoured
    /// only where the ContainerStopSignals feature gate is on (alpha).
    StopSignal(Signal),
    /// A remapped root: `hostUsers: false` is kept only where the
    /// UserNamespacesSupport feature gate is on (by default since 1.33);
    /// elsewhere the API server drops it and the pod's root is the node's.
    UserNamespaces,
    /// `stop.timeout` under the 2 s the kubelet gives a stopping container
    /// at least (and 0, in a pod's spec, deletes it at once).
    ShortGrace(Duration),
    /// A duration written finer than Kubernetes' whole seconds.
    Rounded { key: &'static str, written: Duration, seconds: i64 },
    /// `resources.cpu` finer than the thousandths of a core (millicores)
    /// a Kubernetes quantity holds.
    CpuRounded { written: f64, milli: u64 },
    /// A duration longer than a 32-bit field of seconds holds (a probe's).
    Clamped { key: &'static str, written: Duration, seconds: i32 },
    /// A hostname Kubernetes refuses (not a DNS label).
    Hostname(String),
    /// The workload's own hostname beside the host's network: a
    /// `hostNetwork` pod shares the node's UTS namespace, and its hostname.
    HostnameOfTheNode(String),
    /// A CNI network of this host other than the bridge.
    CniNetwork(String),
    /// The host's network or pid namespace with a remapped root, which
    /// Kubernetes refuses beside `hostUsers: false`: the remap is kept.
    HostNamespaceWithRemap(&'static str),
    /// A port published on one host address only.
    HostIp(PortMapping),
    /// Published on the host: exported as a ClusterIP Service (a hostPort
    /// would fail the Pod Security Standards' baseline).
    Published(PortMapping),
    /// A second target on one host port and protocol (published on two
    /// host addresses): the Service's one port leads to the first's target.
    PortMerged { lost: PortMapping, kept: PortMapping },
    /// A Service's name must start with a letter.
    ServiceName { workload: String, service: String },
    /// tcp and http probes: paddock connects to 127.0.0.1 inside the
    /// workload, the kubelet to the pod's address.
    ProbeAddress,
    /// Start order: pods start independently.
    After(Vec<String>),
    /// Mounts are nosuid and nodev in paddock; a hostPath volume has no
    /// such option.
    MountFlags,
    /// A mount without `idmap` of a remapped workload: its host files
    /// belonged to none of the workload's ids; the kubelet idmaps every
    /// volume of a hostUsers: false pod, which makes them its own.
    NotIdmapped { source: PathBuf, writable: bool, mount: usize },
    /// `remap.isolation = "shared"`: every workload had the same id slice.
    SharedSlice,
    /// A privileged workload under no_new_privileges: the API refuses
    /// `allowPrivilegeEscalation: false` beside `privileged: true`.
    PrivilegedEscalation,
    /// A mount (the manifest's `mount`th) of the host's /, /proc or /sys
    /// without `kernel_filesystems`, which paddock refuses to start and a
    /// hostPath volume does not.
    KernelFilesystems { source: PathBuf, mount: usize },
    /// `devices = true` on a workload that is not privileged: a container
    /// opens only the runtime's default devices, whatever it mounts.
    DeviceMount { source: PathBuf, mount: usize },
    /// A mount whose source is not a directory, file, socket or device on
    /// the host that exports (missing): its hostPath has no type, and a
    /// runtime makes a missing source an empty directory, where paddock
    /// refuses to start.
    UntypedSource { source: PathBuf, mount: usize },
    /// The same, for a source that could not be looked at (an export not
    /// run as root, say).
    UnlookedSource { source: PathBuf, mount: usize, error: String },
    /// paddock's closed network (`private`, or the `bridge`'s published
    /// ports), written as a NetworkPolicy, which only a network plugin
    /// that enforces NetworkPolicy keeps: the API server takes one
    /// whatever the plugin, and without one the pod network is open.
    NetworkPolicy { bridge: bool },
    /// A rule of the Pod Security Standards level the manifest's policy
    /// stands for that the exported pod breaks, and the manifest's keys
    /// (JSON pointers) that break it (`causes`).
    Pss { claimed: Level, violation: Violation, keys: Vec<String> },
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Rootfs { path, image } => write!(
                f,
                "rootfs.path = {:?} is a host directory; the container's root is the image {image} instead",
                path.display().to_string()
            ),
            Unsupported::PidsLimit(n) => write!(
                f,
                "resources.pids = {n}: Kubernetes has no per-pod task limit, only the kubelet's podPidsLimit for every pod of a node: set that in the nodes' kubelet configuration to bound it"
            ),
            Unsupported::Nofile(n) => write!(
                f,
                "resources.nofile = {n}: no field sets a container's RLIMIT_NOFILE, so the container runtime's default applies; to keep the limit, set it in the image's entrypoint (`ulimit -n {n}`)"
            ),
            Unsupported::Backoff { backoff, backoff_max, reset_after } => write!(
                f,
                "restart backoff {backoff} doubling to {backoff_max}, reset after {reset_after}: the kubelet's is fixed (10s doubling to 5m, reset after 10m)"
            ),
            Unsupported::MaxRetries(n) => {
                write!(
                    f,
                    "restart.max_retries = {n}: a pod never gives up restarting; for a task that should stop after failures, a Job's backoffLimit counts them"
                )
            }
            Unsupported::DeploymentRestarts(policy) => write!(
                f,
                "restart.policy = {:?}: a Deployment's pods always restart (export --kind pod keeps the policy)",
                restart_name(*policy)
            ),
            Unsupported::StopSignal(signal) => write!(
                f,
                "stop.signal = {signal:?}: set as lifecycle.stopSignal, which only a cluster with the ContainerStopSignals feature gate (alpha since 1.33) honours; elsewhere the image's STOPSIGNAL or SIGTERM is sent",
                signal = signal.name()
            ),
            Unsupported::UserNamespaces => f.write_str(
                "namespaces.user = \"remap\": set as hostUsers: false, which only a cluster with user namespaces keeps (Kubernetes 1.33 or later, or the UserNamespacesSupport feature gate on); elsewhere the API server drops it and root in the pod is the node's root",
            ),
            Unsupported::ShortGrace(written) => write!(
                f,
                "stop.timeout = {:?}: the kubelet gives a stopping container at least {MIN_GRACE_SECONDS}s (and 0 deletes the pod at once, its containers still stopping); exported as {MIN_GRACE_SECONDS}s",
                written.to_string()
            ),
            Unsupported::Rounded { key, written, seconds } => {
                write!(f, "{key} = {:?}: Kubernetes counts whole seconds; exported as {seconds}s", written.to_string())
            }
            Unsupported::CpuRounded { written, milli } => write!(
                f,
                "resources.cpu = {written}: Kubernetes counts thousandths of a core; exported as {milli}m"
            ),
            Unsupported::Clamped { key, written, seconds } => write!(
                f,
                "{key} = {:?}: a probe's seconds are 32 bits; exported as {seconds}s, the most they hold",
                written.to_string()
            ),
            Unsupported::Hostname(name) => write!(
                f,
                "hostname = {name:?} is not a lowercase DNS label, which Kubernetes requires; the pod's hostname is its name"
            ),
            Unsupported::HostnameOfTheNode(name) => write!(
                f,
                "hostname = {name:?}: paddock gave the workload a UTS namespace of its own, but a pod on the node's network (hostNetwork) shares the node's, and has the node's hostname; not written"
            ),
            Unsupported::CniNetwork(name) => write!(
                f,
                "namespaces.network = {name:?} is a CNI network of the host; the pod joins the cluster's pod network"
            ),
            Unsupported::HostNamespaceWithRemap(which) => write!(
                f,
                "namespaces.{which} = \"host\" with a remapped root: Kubernetes refuses host namespaces beside hostUsers: false, and the remap is kept"
            ),
            Unsupported::HostIp(port) => {
                write!(f, "port {port} is published on one host address only; a Service listens on its cluster address")
            }
            Unsupported::Published(port) => write!(
                f,
                "port {port} was published on the host; it is a ClusterIP Service port, reachable inside the cluster (a hostPort would break the baseline Pod Security Standard; add a NodePort or LoadBalancer Service, or an Ingress, to reach it from outside)"
            ),
            Unsupported::PortMerged { lost, kept } => write!(
                f,
                "port {lost} is not in the Service: a Service has one address, so its port {port}/{protocol} is one port, which leads to port {target} as {kept} asked; port {lost_target} is reachable only at the pod's own address (give it a host port of its own to have it in the Service)",
                port = lost.host_port,
                protocol = lost.protocol,
                target = kept.container_port,
                lost_target = lost.container_port,
            ),
            Unsupported::ServiceName { workload, service } => {
                write!(f, "a Service's name must start with a letter: the Service of {workload} is named {service}")
            }
            Unsupported::ProbeAddress => write!(
                f,
                "health probes connected to 127.0.0.1 inside the workload; the kubelet connects to the pod's address, so the port must listen there"
            ),
            Unsupported::After(names) => write!(
                f,
                "after = [{}]: Kubernetes starts and stops pods independently; the workload must wait for what it needs itself",
                names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
            ),
            Unsupported::MountFlags => write!(
                f,
                "mounts are nosuid and nodev in paddock; a hostPath volume has no such option (allowPrivilegeEscalation: false and the runtime's device rules cover most of it)"
            ),
            Unsupported::NotIdmapped { source, writable, .. } => write!(
                f,
                "mount {:?} is not idmapped: in paddock its files' owners were not the workload's ids, so its root could not {}; the kubelet idmaps every volume of a hostUsers: false pod, where uid N inside acts as the files' owner N on the node (root as root)",
                source.display().to_string(),
                if *writable { "change root's files there" } else { "read what only root may read there" }
            ),
            Unsupported::SharedSlice => write!(
                f,
                "remap.isolation = \"shared\": every workload had the same host ids; each pod gets a range of its own"
            ),
            Unsupported::PrivilegedEscalation => f.write_str(
                "security.privileged = true under no_new_privileges (the default): paddock kept its processes from gaining privileges (setuid binaries, file capabilities), but the API refuses allowPrivilegeEscalation: false beside privileged: true, so the pod's processes can; set no_new_privileges = false to say so, or drop privileged",
            ),
            Unsupported::DeviceMount { source, .. } => write!(
                f,
                "mount {:?} allows device nodes (devices = true): a container that is not privileged may open only the runtime's default devices (/dev/null, /dev/zero, /dev/urandom, a terminal), whatever its volumes hold; a device of the node's needs `privileged` or a device plugin",
                source.display().to_string()
            ),
            Unsupported::KernelFilesystems { source, .. } => write!(
                f,
                "mount {:?} is or holds the host's /proc or /sys, which paddock refuses to start without kernel_filesystems = true on the mount; a hostPath volume shows them to the pod: mount only the directories the workload needs, or set kernel_filesystems = true to say it is meant",
                source.display().to_string()
            ),
            Unsupported::UntypedSource { source, .. } => write!(
                f,
                "mount {:?} is no directory, file, socket or device on this host, so its hostPath has no type: where it is missing on a node, the runtime makes it an empty directory, where paddock refuses to start; give the volume its type",
                source.display().to_string()
            ),
            Unsupported::UnlookedSource { source, error, .. } => write!(
                f,
                "mount {:?} cannot be looked at here ({error}), so its hostPath has no type: where it is missing on a node, the runtime makes it an empty directory, where paddock refuses to start; export as root, or give the volume its type",
                source.display().to_string()
            ),
            Unsupported::NetworkPolicy { bridge } => {
                let (network, kept, open) = match bridge {
                    false => (
                        "private",
                        "nothing reaches it and it reaches nothing",
                        "the pod reaches, and is reached from, every pod and address",
                    ),
                    true => (
                        "bridge",
                        "only the published ports and the bridge's other workloads reach it",
                        "every pod of the cluster reaches every port of this one",
                    ),
                };
                write!(
                    f,
                    "namespaces.network = \"{network}\": in paddock {kept}; the NetworkPolicy written says so, but only a network plugin that enforces NetworkPolicy keeps it (Calico, Cilium and Antrea do; flannel alone does not), and the API server takes it without a word where none does: there {open}. Check that the cluster's plugin enforces it"
                )
            }
            Unsupported::Pss { claimed, violation, keys } => {
                let from = match keys.as_slice() {
                    [] => String::new(),
                    keys => {
                        let keys: Vec<String> = keys.iter().map(|k| format!("`{}`", key_name(k))).collect();
                        format!(" (from {})", keys.join(", "))
                    }
                };
                write!(
                    f,
                    "the policy passed stands for the {claimed} Pod Security Standard, which this pod breaks: {violation}{from}; the namespace is labelled with the level it passes"
                )
            }
        }
    }
}

impl Unsupported {
    /// Where in the manifest the item is written (JSON pointers, as a
    /// problem's, the first written of them counting): empty for what no
    /// key says (the configuration's, a policy's, the Service's name from
    /// the file's). A default not written is at none of them.
    pub fn pointers(&self, manifest: &Manifest) -> Vec<String> {
        let port = |p: &PortMapping| manifest.ports.iter().position(|q| q == p).map(|i| format!("/ports/{i}"));
        let one = |p: &str| vec![p.to_owned()];
        match self {
            Unsupported::Rootfs { .. } => one("/rootfs/path"),
            Unsupported::PidsLimit(_) => one("/resources/pids"),
            Unsupported::Nofile(_) => one("/resources/nofile"),
            Unsupported::Backoff { .. } => {
                ["backoff", "backoff_max", "reset_after"].map(|k| format!("/restart/{k}")).into()
            }
            Unsupported::MaxRetries(_) => one("/restart/max_retries"),
            Unsupported::DeploymentRestarts(_) => one("/restart/policy"),
            Unsupported::StopSignal(_) => one("/stop/signal"),
            Unsupported::ShortGrace(_) => one("/stop/timeout"),
            Unsupported::UserNamespaces => one("/namespaces/user"),
            Unsupported::Rounded { key, .. } | Unsupported::Clamped { key, .. } => {
                one(&format!("/{}", key.replace('.', "/")))
            }
            Unsupported::CpuRounded { .. } => one("/resources/cpu"),
            Unsupported::Hostname(_) | Unsupported::HostnameOfTheNode(_) => one("/hostname"),
            Unsupported::CniNetwork(_) => one("/namespaces/network"),
            Unsupported::HostNamespaceWithRemap(which) => one(&format!("/namespaces/{which}")),
            Unsupported::HostIp(p) | Unsupported::Published(p) | Unsupported::PortMerged { lost: p, .. } => {
                port(p).into_iter().collect()
            }
            Unsupported::ProbeAddress => one("/health"),
            Unsupported::After(_) => one("/after"),
            Unsupported::MountFlags => one("/mounts"),
            Unsupported::NotIdmapped { mount, .. }
            | Unsupported::KernelFilesystems { mount, .. }
            | Unsupported::DeviceMount { mount, .. }
            | Unsupported::UntypedSource { mount, .. }
            | Unsupported::UnlookedSource { mount, .. } => one(&format!("/mounts/{mount}/source")),
            Unsupported::PrivilegedEscalation => one("/security/privileged"),
            // The bridge is written, or implied by the ports.
            Unsupported::NetworkPolicy { bridge } => match bridge {
                false => one("/namespaces/network"),
                true => vec!["/namespaces/network".to_owned(), "/ports".to_owned()],
            },
            Unsupported::Pss { keys, .. } => keys.clone(),
            Unsupported::ServiceName { .. } | Unsupported::SharedSlice => Vec::new(),
        }
    }
}

/// The manifest's keys (JSON pointers) whose values the mapping made into
/// the fields a Pod Security Standards rule looks at, each only where its
/// value is a cause (`user` for root, not for a non-root user), in the
/// order they are named; none for a field no key sets.
pub fn causes(violation: &Violation, m: &Manifest) -> Vec<String> {
    let s = &m.security;
    // The first capability named that the rule refuses, at its place in the list.
    let capability = |refused: &[String]| {
        let at = s.capabilities.iter().position(|c| refused.first().is_some_and(|r| r == c.name()));
        vec![at.map_or_else(|| "/security/capabilities".to_owned(), |i| format!("/security/capabilities/{i}"))]
    };
    let when =
        |pairs: &[(bool, &str)]| pairs.iter().filter(|(cause, _)| *cause).map(|(_, k)| (*k).to_owned()).collect();
    match violation {
        Violation::HostNamespace(field) => match *field {
            "hostNetwork" => vec!["/namespaces/network".to_owned()],
            "hostPID" => vec!["/namespaces/pid".to_owned()],
            _ => Vec::new(),
        },
        Violation::Privileged => vec!["/security/privileged".to_owned()],
        Violation::CapabilitiesBeyondBaseline(caps) | Violation::CapabilitiesBeyondRestricted(caps) => capability(caps),
        Violation::HostPath { volume, .. } => {
            super::kubernetes::mount_of_volume(volume).map(|i| format!("/mounts/{i}/source")).into_iter().collect()
        }
        // export writes no hostPort.
        Violation::HostPort(_) => Vec::new(),
        Violation::SeccompUnconfined => {
            when(&[(s.privileged, "/security/privileged"), (s.seccomp != Seccomp::Default, "/security/seccomp")])
        }
        Violation::RunAsRoot => vec!["/user".to_owned()],
        Violation::PrivilegeEscalation => {
            when(&[(s.privileged, "/security/privileged"), (!s.no_new_privileges, "/security/no_new_privileges")])
        }
        Violation::CapabilitiesNotDropped => when(&[
            (s.privileged, "/security/privileged"),
            (!s.no_new_privileges, "/security/no_new_privileges"),
            (m.user == 0, "/user"),
        ]),
    }
}

fn restart_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    }
}
