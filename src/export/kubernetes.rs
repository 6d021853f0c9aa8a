//! The pod: what paddock would run for a validated manifest (its effective
//! settings), field by field, as a Kubernetes PodSpec, with every setting
//! it cannot carry listed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, HTTPGetAction,
    HostPathVolumeSource, Lifecycle, PodOS, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Kind;
use super::unsupported::{MIN_GRACE_SECONDS, Unsupported};
use crate::model::{
    Health, Manifest, Network, OnUnhealthy, Probe as PaddockProbe, Protocol, RestartPolicy, Seccomp, SharedOrPrivate,
    Signal,
};
use crate::validate::{Problem, SpanIndex, WorkloadSpec};

/// The volume that stands for paddock's private `/tmp`.
const TMP_VOLUME: &str = "tmp";

/// The pod `spec` would run as, and what it could not say.
pub fn pod_spec(spec: &WorkloadSpec, image: &str, kind: Kind) -> (PodSpec, Vec<Unsupported>) {
    let m = &spec.manifest;
    let mut lost = Vec::new();
    lost.push(Unsupported::Rootfs { path: m.rootfs.path.clone(), image: image.to_owned() });
    let remap = m.namespaces.remapped();
    if remap {
        lost.push(Unsupported::UserNamespaces);
    }
    // Kubernetes refuses host namespaces beside hostUsers: false; of the
    // two, the remap is the guarantee that must move with the workload.
    let host_network = m.namespaces.network == Network::Host;
    let host_pid = m.namespaces.pid == SharedOrPrivate::Host;
    for (host, which) in [(host_network, "network"), (host_pid, "pid")] {
        if host && remap {
            lost.push(Unsupported::HostNamespaceWithRemap(which));
        }
    }
    if let Network::Cni(name) = &m.namespaces.network
        && name != crate::model::BRIDGE
    {
        lost.push(Unsupported::CniNetwork(name.clone()));
    }
    let hostname = m.hostname.clone().unwrap_or_else(|| spec.name.to_string());
    // paddock gives every workload a UTS namespace of its own; a pod on the
    // node's network shares the node's, hostname included.
    let hostname = if host_network && !remap {
        lost.push(Unsupported::HostnameOfTheNode(hostname));
        None
    } else if is_dns_label(&hostname) {
        Some(hostname)
    } else {
        lost.push(Unsupported::Hostname(hostname));
        None
    };

    let (volumes, volume_mounts) = volumes(m, remap, &mut lost);
    let mut container = Container {
        name: spec.name.to_string(),
        image: Some(image.to_owned()),
        command: Some(literal_all(&m.command)),
        env: (!m.env.is_empty()).then(|| {
            m.env
                .iter()
                .map(|(k, v)| EnvVar { name: k.clone(), value: Some(literal(v)), ..Default::default() })
                .collect()
        }),
        working_dir: Some(m.workdir.display().to_string()),
        security_context: Some(security_context(m, &mut lost)),
        resources: resources(m, &mut lost),
        volume_mounts: Some(volume_mounts),
        ports: container_ports(m),
        ..Default::default()
    };
    if let Some(health) = &m.health {
        probes(&mut container, health, &mut lost);
    }
    if !m.after.is_empty() {
        lost.push(Unsupported::After(m.after.clone()));
    }

    let grace = if m.stop.timeout.as_std() < std::time::Duration::from_secs(MIN_GRACE_SECONDS as u64) {
        lost.push(Unsupported::ShortGrace(m.stop.timeout));
        MIN_GRACE_SECONDS
    } else {
        seconds("stop.timeout", m.stop.timeout, 0, &mut lost)
    };
    let mut os = None;
    if m.stop.signal != Signal::Term {
        container.lifecycle =
            Some(Lifecycle { stop_signal: Some(m.stop.signal.name().to_owned()), ..Default::default() });
        // The API server accepts a stop signal only for a pod that names its OS.
        os = Some(PodOS { name: "linux".to_owned() });
        lost.push(Unsupported::StopSignal(m.stop.signal));
    }
    let restart_policy = match (kind, m.restart.policy) {
        (Kind::Pod, policy) => restart_name(policy),
        (Kind::Deployment, RestartPolicy::Always) => "Always",
        (Kind::Deployment, policy) => {
            lost.push(Unsupported::DeploymentRestarts(policy));
            "Always"
        }
    };
    restart_limits(m, &mut lost);

    let pod = PodSpec {
        containers: vec![container],
        host_users: remap.then_some(false),
        // paddock gives a workload no supplementary groups; a pod would get
        // those the image's /etc/group gives its user.
        security_context: Some(PodSecurityContext {
            supplemental_groups_policy: Some("Strict".to_owned()),
            ..Default::default()
        }),
        host_network: (host_network && !remap).then_some(true),
        host_pid: (host_pid && !remap).then_some(true),
        hostname,
        restart_policy: Some(restart_policy.to_owned()),
        termination_grace_period_seconds: Some(grace),
        volumes: Some(volumes),
        os,
        // paddock hands a workload no credentials; neither should the pod.
        automount_service_account_token: Some(false),
        // Nor an environment it did not declare: no `SVC_SERVICE_HOST`
        // and `SVC_PORT_*` for each Service of the namespace.
        enable_service_links: Some(false),
        ..Default::default()
    };
    (pod, lost)
}

/// A string the kubelet expands (a container's command, an env value, an
/// exec probe's command) that means what it meant to paddock, which
/// expands nothing: the kubelet turns `$(VAR)` into VAR's value and `$$`
/// into `$`, so each `$` is written `$$` and comes back as itself.
fn literal(s: &str) -> String {
    s.replace('$', "$$")
}

fn literal_all(argv: &[String]) -> Vec<String> {
    argv.iter().map(|a| literal(a)).collect()
}

fn restart_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "Always",
        RestartPolicy::OnFailure => "OnFailure",
        RestartPolicy::Never => "Never",
    }
}

/// What no pod field holds: the backoff's shape and giving up.
fn restart_limits(m: &Manifest, lost: &mut Vec<Unsupported>) {
    let r = &m.restart;
    if r.policy != RestartPolicy::Never {
        lost.push(Unsupported::Backoff { backoff: r.backoff, backoff_max: r.backoff_max, reset_after: r.reset_after });
    }
    if r.policy == RestartPolicy::OnFailure && r.max_retries > 0 {
        lost.push(Unsupported::MaxRetries(r.max_retries));
    }
}

/// The security context paddock applied. Capabilities: a root workload
/// keeps the runtime's default set (Docker's, which containerd shares)
/// plus what the manifest adds; a non-root one under no_new_privileges
/// holds none and can gain none, which `drop: [ALL]` says exactly.
fn security_context(m: &Manifest, lost: &mut Vec<Unsupported>) -> SecurityContext {
    let s = &m.security;
    if s.privileged && s.no_new_privileges {
        lost.push(Unsupported::PrivilegedEscalation);
    }
    let mut added: Vec<String> = s.capabilities.iter().map(|c| c.name().to_owned()).collect();
    added.sort();
    added.dedup();
    let capabilities = if s.privileged {
        None
    } else if m.user != 0 && s.no_new_privileges {
        Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None })
    } else {
        (!added.is_empty()).then_some(Capabilities { add: Some(added), drop: None })
    };
    // A privileged workload has no seccomp filter in paddock either.
    let seccomp = match (s.privileged, s.seccomp) {
        (false, Seccomp::Default) => "RuntimeDefault",
        _ => "Unconfined",
    };
    SecurityContext {
        run_as_user: Some(i64::from(m.user)),
        run_as_group: Some(i64::from(m.group)),
        run_as_non_root: (m.user != 0).then_some(true),
        privileged: s.privileged.then_some(true),
        // The API refuses allowPrivilegeEscalation: false beside privileged.
        allow_privilege_escalation: (!s.privileged).then_some(!s.no_new_privileges),
        read_only_root_filesystem: Some(m.rootfs.readonly),
        capabilities,
        seccomp_profile: Some(SeccompProfile { type_: seccomp.to_owned(), localhost_profile: None }),
        ..Default::default()
    }
}

/// A mount source's hostPath type, as it is on this host (a symlink
/// followed, as paddock's start follows one it trusts): the kubelet then
/// refuses the pod where it is missing or of another kind, as paddock
/// refuses the start. Ok(None) for one of no type (a FIFO) or not here;
/// Err for one that cannot be looked at (not root: `volumes_root`).
fn source_kind(source: &std::path::Path) -> Result<Option<String>, std::io::Error> {
    use std::os::unix::fs::FileTypeExt;
    let kind = match std::fs::metadata(source) {
        Ok(meta) => meta.file_type(),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let name = match () {
        () if kind.is_dir() => "Directory",
        () if kind.is_file() => "File",
        () if kind.is_socket() => "Socket",
        () if kind.is_char_device() => "CharDevice",
        () if kind.is_block_device() => "BlockDevice",
        () => return Ok(None),
    };
    Ok(Some(name.to_owned()))
}

/// Mounts as hostPath volumes, and paddock's private `/tmp` as a
/// memory-backed emptyDir. Under hostUsers: false the kubelet idmaps every
/// volume: right for an idmapped mount, but a plain one of a remapped
/// workload gains its files' owners' rights, so each such mount is listed.
fn volumes(m: &Manifest, remap: bool, lost: &mut Vec<Unsupported>) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    // Compared as paths, not text: "/tmp/" is /tmp too.
    if !m.mounts.iter().any(|mt| mt.target == std::path::Path::new("/tmp")) {
        volumes.push(Volume {
            name: TMP_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".to_owned()), size_limit: None }),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: TMP_VOLUME.to_owned(), mount_path: "/tmp".to_owned(), ..Default::default() });
    }
    for (i, mt) in m.mounts.iter().enumerate() {
        let name = mount_volume(i);
        let (source, mount) = (mt.source.clone(), i);
        let kind = match source_kind(&mt.source) {
            Ok(Some(kind)) => Some(kind),
            Ok(None) => {
                lost.push(Unsupported::UntypedSource { source, mount });
                None
            }
            Err(e) => {
                lost.push(Unsupported::UnlookedSource { source, mount, error: e.to_string() });
                None
            }
        };
        volumes.push(Volume {
            name: name.clone(),
            host_path: Some(HostPathVolumeSource { path: mt.source.display().to_string(), type_: kind }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: mt.target.display().to_string(),
            read_only: Some(mt.readonly),
            // paddock's read-only mount is read-only all the way down; a
            // plain readOnly leaves the source's submounts writable. A
            // runtime that cannot do it refuses the pod rather than run it so.
            recursive_read_only: mt.readonly.then(|| "Enabled".to_owned()),
            ..Default::default()
        });
        // What paddock's start checks on the host (`SourceError::
        // KernelFilesystem`), said here for the paths that always are.
        let kernel =
            mt.source == std::path::Path::new("/") || mt.source.starts_with("/proc") || mt.source.starts_with("/sys");
        if kernel && !mt.kernel_filesystems {
            lost.push(Unsupported::KernelFilesystems { source: mt.source.clone(), mount: i });
        }
        if mt.devices && !m.security.privileged {
            lost.push(Unsupported::DeviceMount { source: mt.source.clone(), mount: i });
        }
        if remap && !mt.idmap {
            lost.push(Unsupported::NotIdmapped { source: mt.source.clone(), writable: !mt.readonly, mount: i });
        }
    }
    if m.mounts.iter().any(|mt| !mt.setuid || !mt.devices) {
        lost.push(Unsupported::MountFlags);
    }
    (volumes, mounts)
}

/// The volume of the manifest's `i`th mount.
fn mount_volume(i: usize) -> String {
    format!("mount-{i}")
}

/// Which of the manifest's mounts a volume is, by its name (`mount_volume`).
pub fn mount_of_volume(name: &str) -> Option<usize> {
    name.strip_prefix("mount-")?.parse().ok()
}

/// Limits: memory and CPU have fields; pids and nofile have none. Each
/// limit is requested too, as paddock's limit was the workload's own. The
/// API server copies a limit into a Pod's unwritten request anyway, so
/// what runs is the same; but a Deployment's template is not defaulted,
/// and a cluster's policy that requires requests (a Kyverno or Gatekeeper
/// rule, a linter of the YAML) would refuse it without them.
fn resources(m: &Manifest, lost: &mut Vec<Unsupported>) -> Option<ResourceRequirements> {
    let r = &m.resources;
    let mut limits = BTreeMap::new();
    if let Some(memory) = r.memory {
        limits.insert("memory".to_owned(), Quantity(memory_quantity(memory.bytes())));
    }
    if let Some(cpu) = r.cpu {
        limits.insert("cpu".to_owned(), Quantity(cpu_quantity(cpu)));
        let milli = (cpu * 1000.0).round();
        if (cpu * 1000.0 - milli).abs() > 1e-6 {
            lost.push(Unsupported::CpuRounded { written: cpu, milli: milli as u64 });
        }
    }
    if let Some(pids) = r.pids {
        lost.push(Unsupported::PidsLimit(pids));
    }
    if let Some(nofile) = r.nofile {
        lost.push(Unsupported::Nofile(nofile));
    }
    (!limits.is_empty()).then(|| ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..Default::default()
    })
}

/// Bytes in the largest binary suffix that divides them ("64Mi").
pub fn memory_quantity(bytes: u64) -> String {
    for (suffix, per) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes % per == 0 {
            return format!("{}{suffix}", bytes / per);
        }
    }
    bytes.to_string()
}

/// Cores as Kubernetes writes them: whole cores, or millicores ("500m").
pub fn cpu_quantity(cores: f64) -> String {
    // The schema bounds cores to 0.01..=1024, so this fits and is not 0.
    let milli = (cores * 1000.0).round() as u64;
    if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
}

/// The container ports the manifest publishes, once each.
fn container_ports(m: &Manifest) -> Option<Vec<ContainerPort>> {
    let mut seen: Vec<(u16, Protocol)> = Vec::new();
    for p in &m.ports {
        if !seen.contains(&(p.container_port, p.protocol)) {
            seen.push((p.container_port, p.protocol));
        }
    }
    (!seen.is_empty()).then(|| {
        seen.into_iter()
            .map(|(port, protocol)| ContainerPort {
                container_port: i32::from(port),
                protocol: Some(protocol_name(protocol).to_owned()),
                ..Default::default()
            })
            .collect()
    })
}

pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// `[health]`: "restart" is the kubelet's liveness probe, "mark" its
/// readiness probe. A start period is a startup probe that allows as many
/// failures as fit in it before the usual `retries`, so a slow start is
/// not killed and the first pass ends it, as in paddock.
fn probes(container: &mut Container, health: &Health, lost: &mut Vec<Unsupported>) {
    let Some(probe) = health.probe() else { return };
    let period = probe_seconds("health.interval", health.interval, lost);
    let timeout = probe_seconds("health.timeout", health.timeout, lost);
    let retries = i32::try_from(health.retries).unwrap_or(i32::MAX);
    let mut action = Probe::default();
    match probe {
        PaddockProbe::Command(argv) => action.exec = Some(ExecAction { command: Some(literal_all(&argv)) }),
        PaddockProbe::Tcp(port) => {
            action.tcp_socket = Some(TCPSocketAction { port: IntOrString::Int(i32::from(port)), host: None });
            lost.push(Unsupported::ProbeAddress);
        }
        PaddockProbe::Http { port, path } => {
            action.http_get =
                Some(HTTPGetAction { port: IntOrString::Int(i32::from(port)), path: Some(path), ..Default::default() });
            lost.push(Unsupported::ProbeAddress);
        }
    }
    let base = Probe {
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(retries),
        ..action
    };
    // paddock's first probe comes one interval after the start.
    let first = Probe { initial_delay_seconds: Some(period), ..base.clone() };
    match health.on_unhealthy {
        OnUnhealthy::Restart if !health.start_period.as_std().is_zero() => {
            // paddock does not count a failure whose probe comes before
            // the start period's end: the probes at period, 2 period, ...
            // strictly before it (30s at 10s: the two at 10s and 20s; the
            // one at 30s counts), so one fewer than start / period, rounded up.
            let start = health.start_period.as_std().as_secs_f64();
            let grace_probes = ((start / f64::from(period)).ceil() as i32 - 1).max(0);
            container.startup_probe =
                Some(Probe { failure_threshold: Some(grace_probes.saturating_add(retries)), ..first });
            container.liveness_probe = Some(base);
        }
        OnUnhealthy::Restart => container.liveness_probe = Some(first),
        // Not ready until a probe passes: paddock's "starting", then what
        // holds back a workload `after` it, is what a readiness probe holds back.
        OnUnhealthy::Mark => container.readiness_probe = Some(first),
    }
}

/// A duration in whole seconds, at least `min`, rounded up; said when that changed it.
fn seconds(key: &'static str, d: crate::model::Duration, min: i64, lost: &mut Vec<Unsupported>) -> i64 {
    let std = d.as_std();
    let whole = i64::try_from(std.as_secs()).unwrap_or(i64::MAX / 2) + i64::from(std.subsec_nanos() > 0);
    let whole = whole.max(min);
    let exact = std.subsec_nanos() == 0 && whole == i64::try_from(std.as_secs()).unwrap_or(-1);
    if !exact {
        lost.push(Unsupported::Rounded { key, written: d, seconds: whole });
    }
    whole
}

/// A probe's seconds, at least 1, in the 32 bits its fields have: a
/// longer duration (some 68 years) is cut to the most they hold, and said.
fn probe_seconds(key: &'static str, d: crate::model::Duration, lost: &mut Vec<Unsupported>) -> i32 {
    let whole = seconds(key, d, 1, lost);
    i32::try_from(whole).unwrap_or_else(|_| {
        lost.push(Unsupported::Clamped { key, written: d, seconds: i32::MAX });
        i32::MAX
    })
}

/// The largest uid or gid the API server takes (`runAsUser`, `runAsGroup`).
pub const MAX_ID: u32 = i32::MAX as u32;

/// What a valid manifest says that the API server would refuse, so that
/// no object can be written for it (each a problem at its key, as `check`
/// shows one): env names outside printable ASCII or with `=`, and ids
/// above `MAX_ID`.
pub fn refused(m: &Manifest, spans: &SpanIndex) -> Vec<Problem> {
    let mut problems = Vec::new();
    for name in m.env.keys() {
        if !name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=') {
            let at = spans.key_span(&crate::validate::push_pointer("/env", name));
            problems.push(
                Problem::error(
                    at,
                    format!(
                        "Kubernetes refuses the env name {:?}: a name is printable ASCII without `=`",
                        crate::validate::shortened(name)
                    ),
                )
                .with_help("rename the variable (letters, digits and `_`), or leave this file out of the export"),
            );
        }
    }
    for (key, id) in [("user", m.user), ("group", m.group)] {
        if id > MAX_ID {
            let field = if key == "user" { "runAsUser" } else { "runAsGroup" };
            problems.push(
                Problem::error(
                    spans.value_span(&format!("/{key}")),
                    format!("Kubernetes refuses {key} = {id}: {field} is at most {MAX_ID}"),
                )
                .with_help(format!(
                    "give the workload a {key} of at most {MAX_ID}, or leave this file out of the export"
                )),
            );
        }
    }
    // In the file's order, as `check` shows a file's problems.
    problems.sort_by_key(|p| p.span.as_ref().map(|s| (s.start, s.end)));
    problems
}

/// RFC 1123 label, as a pod's hostname must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
