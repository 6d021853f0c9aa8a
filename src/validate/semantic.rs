//! Checks no JSON Schema can express, on the typed manifest. Pure: the
//! host's filesystem is consulted separately (`host_checks`).

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use super::problem::Problem;
use super::source::SpanIndex;
use crate::model::{MIN_PROBE_INTERVAL, Manifest, Network, PortMapping, Seccomp, WorkloadName};

fn has_parent_dir(path: &Path) -> bool {
    path.components().any(|c| c == Component::ParentDir)
}

/// `/a//b/./c/` and `/a/b/c` name the same place.
fn normalized(path: &Path) -> PathBuf {
    path.components().filter(|c| *c != Component::CurDir).collect()
}

/// The kernel's limit on one string passed to execve (MAX_ARG_STRLEN,
/// 32 pages), its NUL included: a longer argument or `KEY=VALUE` fails
/// the exec with E2BIG.
pub const MAX_ARG_BYTES: usize = 131_071;

pub fn check(m: &Manifest, spans: &SpanIndex) -> Vec<Problem> {
    let mut problems = Vec::new();
    let at = |pointer: &str| spans.value_span(pointer).or_else(|| spans.locate(pointer));
    let too_long = "the kernel passes at most 131071 bytes per argument or variable to a program; put the data in a file and mount it";

    for (i, arg) in m.command.iter().enumerate() {
        if arg.contains('\0') {
            problems.push(Problem::error(at(&format!("/command/{i}")), "a command argument cannot contain a NUL byte"));
        }
        if arg.len() > MAX_ARG_BYTES {
            problems.push(
                Problem::error(at(&format!("/command/{i}")), format!("this argument is {} bytes long", arg.len()))
                    .with_help(too_long),
            );
        }
    }
    for (key, value) in &m.env {
        let pointer = super::source::push_pointer("/env", key);
        if key.contains('\0') || value.contains('\0') {
            problems.push(Problem::error(at(&pointer), "environment variables cannot contain a NUL byte"));
        }
        if key.len() + 1 + value.len() > MAX_ARG_BYTES {
            problems.push(
                Problem::error(
                    at(&pointer),
                    format!("{}=... is {} bytes long", super::shortened(key), key.len() + 1 + value.len()),
                )
                .with_help(too_long),
            );
        }
    }

    let no_dotdot = "write the path without `..`: policies match paths by prefix, and `..` would step out of it";
    for (pointer, path) in [("/rootfs/path", &m.rootfs.path), ("/workdir", &m.workdir)] {
        if has_parent_dir(path) {
            problems.push(
                Problem::error(at(pointer), format!("{} contains a `..` component", path.display()))
                    .with_help(no_dotdot),
            );
        }
    }

    // By target: one lookup per mount, not a scan of the ones before it.
    let mut targets: std::collections::HashMap<PathBuf, usize> = std::collections::HashMap::new();
    for (i, mount) in m.mounts.iter().enumerate() {
        for (field, path) in [("source", &mount.source), ("target", &mount.target)] {
            if has_parent_dir(path) {
                problems.push(
                    Problem::error(
                        at(&format!("/mounts/{i}/{field}")),
                        format!("mount {field} {} contains a `..` component", path.display()),
                    )
                    .with_help(no_dotdot),
                );
            }
        }
        if mount.idmap && !m.namespaces.remapped() {
            problems.push(
                Problem::error(
                    at(&format!("/mounts/{i}/idmap")),
                    "an idmapped mount maps the files' owners into the workload's user namespace, and with namespaces.user = \"host\" it has none",
                )
                .with_help("remove idmap: in the host's user namespace the workload sees the files' real owners already"),
            );
        }
        let target = normalized(&mount.target);
        if target == Path::new("/") {
            problems.push(
                Problem::error(at(&format!("/mounts/{i}/target")), "a mount cannot replace the sandbox's `/`")
                    .with_help("set [rootfs] path instead"),
            );
        }
        if let Some(first) = targets.get(&target) {
            problems.push(
                Problem::error(
                    at(&format!("/mounts/{i}/target")),
                    format!("{} is already the target of mounts[{first}]", mount.target.display()),
                )
                .with_help("mount each target once; the second mount would hide the first"),
            );
        } else {
            targets.insert(target, i);
        }
    }
    // Mounts are made in the order listed: one whose target lies beneath a
    // later one's would be hidden by it (Docker sorts them silently; here
    // the manifest's order is what happens, so it is refused).
    for (i, mount) in m.mounts.iter().enumerate() {
        let target = normalized(&mount.target);
        let hiding = target
            .ancestors()
            .skip(1)
            .filter(|above| above.parent().is_some()) // a mount on `/` is refused above
            .find_map(|above| targets.get(above).filter(|&&j| j > i));
        if let Some(&j) = hiding {
            problems.push(
                Problem::error(
                    at(&format!("/mounts/{i}/target")),
                    format!(
                        "{} lies beneath {}, the target of mounts[{j}], which is mounted after it and would hide it",
                        mount.target.display(),
                        m.mounts[j].target.display()
                    ),
                )
                .with_help(format!("list mounts[{j}] before mounts[{i}]: mounts are made in the order listed")),
            );
        }
    }

    match &m.namespaces.network {
        Network::Private if !m.ports.is_empty() => problems.push(
            Problem::error(
                at("/namespaces/network"),
                "a private network has only loopback: there is nothing to publish `ports` on",
            )
            .with_help("use network = \"bridge\" (or leave network out: with ports, it is the bridge)"),
        ),
        Network::Host if !m.ports.is_empty() => problems.push(
            Problem::error(
                at("/ports"),
                "on the host's network the workload's ports are the host's already: nothing is published",
            )
            .with_help("remove `ports`, or use network = \"bridge\""),
        ),
        _ => {}
    }
    for (i, port) in m.ports.iter().enumerate() {
        // portmap skips a mapping whose host address is of a family the
        // workload has no address in: it would be listed, and not published.
        if m.namespaces.network.cni() == Some(crate::model::BRIDGE) && port.host_ip.is_some_and(|ip| ip.is_ipv6()) {
            problems.push(
                Problem::error(
                    at(&format!("/ports/{i}")),
                    format!("paddock's bridge network is IPv4 only: nothing would be published on {port}"),
                )
                .with_help("publish it on an IPv4 address (or on every address: leave the address out), or use a CNI network of your own that gives the workload an IPv6 address"),
            );
        }
    }
    let ports: Vec<(usize, PortMapping)> = m.ports.iter().copied().enumerate().collect();
    problems.extend(published_twice(&ports, &at));

    // Settings that would do nothing as written: said, not silently ignored.
    if m.user != 0 && !m.security.capabilities.is_empty() && m.security.no_new_privileges {
        problems.push(
            Problem::warning(
                at("/security/capabilities"),
                format!("user {} gets none of these capabilities: only root in the workload holds them", m.user),
            )
            .with_help(
                "run as user 0, or set no_new_privileges = false and give the program a file capability \
                 (setcap), which no_new_privileges would ignore",
            ),
        );
    }
    if m.security.no_new_privileges {
        for (i, _) in m.mounts.iter().enumerate().filter(|(_, mount)| mount.setuid) {
            problems.push(
                Problem::warning(
                    at(&format!("/mounts/{i}/setuid")),
                    "`setuid = true` does nothing while no_new_privileges is set (the default): the kernel ignores \
                     set-user-id bits and file capabilities then",
                )
                .with_help("remove it, or set no_new_privileges = false in [security] (which baseline refuses)"),
            );
        }
    }
    if m.resources.memory.is_some_and(|size| size.bytes() == 0) {
        problems.push(
            Problem::error(at("/resources/memory"), "a memory limit of 0 leaves the workload no memory at all")
                .with_help("give it room, such as \"64MiB\", or remove `memory` for no limit"),
        );
    }
    // Restart settings the policy never reads (systemd's StartLimitBurst
    // gives up under Restart=always; paddock's max_retries does not).
    let written: Vec<&str> = match m.restart.policy {
        crate::model::RestartPolicy::OnFailure => Vec::new(),
        crate::model::RestartPolicy::Always => vec!["max_retries"],
        crate::model::RestartPolicy::Never => vec!["max_retries", "backoff", "backoff_max", "reset_after"],
    };
    for key in written.into_iter().filter(|key| spans.get(&format!("/restart/{key}")).is_some()) {
        let policy = match m.restart.policy {
            crate::model::RestartPolicy::Always => "\"always\" restarts for ever",
            _ => "\"never\" runs it once",
        };
        problems.push(
            Problem::warning(at(&format!("/restart/{key}")), format!("`{key}` does nothing: policy = {policy}"))
                .with_help("give up after failures in a row with policy = \"on-failure\", or remove it"),
        );
    }
    if m.security.privileged && !m.security.capabilities.is_empty() {
        problems.push(
            Problem::warning(at("/security/capabilities"), "a privileged workload holds every capability already")
                .with_help("remove `capabilities`, or `privileged` if only these are wanted"),
        );
    }
    if m.security.privileged && spans.get("/security/seccomp").is_some() && m.security.seccomp == Seccomp::Default {
        problems.push(
            Problem::warning(at("/security/seccomp"), "a privileged workload runs with no seccomp filter")
                .with_help("remove `seccomp`, or `privileged` if the filter is wanted"),
        );
    }
    if let Some(health) = &m.health {
        let written = [health.command.is_some(), health.tcp.is_some(), health.http.is_some()];
        if written.iter().filter(|w| **w).count() != 1 {
            problems.push(
                Problem::error(at("/health"), "a health check needs exactly one probe: `command`, `tcp` or `http`")
                    .with_help("e.g. tcp = 8080, or http = { port = 8080, path = \"/healthz\" }, or command = [\"pg_isready\"]"),
            );
        }
        for (i, arg) in health.command.iter().flatten().enumerate() {
            if arg.contains('\0') {
                problems.push(Problem::error(
                    at(&format!("/health/command/{i}")),
                    "a command argument cannot contain a NUL byte",
                ));
            }
        }
        // Warnings, not errors: a manifest that ran before these were
        // checked must not be refused by the next daemon, which would stop it.
        if health.interval.as_std() < MIN_PROBE_INTERVAL {
            problems.push(
                Problem::warning(
                    at("/health/interval"),
                    format!("an interval of {} is probed every 100ms", health.interval),
                )
                .with_help("set interval to 100ms or more (the kubelet's shortest period is 1s)"),
            );
        }
        if health.timeout.as_std().is_zero() {
            problems.push(
                Problem::warning(at("/health/timeout"), "a probe given no time fails every time")
                    .with_help("give it time to answer, such as \"1s\""),
            );
        }
    }
    // A warning, not an error, as above: a manifest that ran with it
    // before must not be stopped by the next daemon.
    let lost = match m.stop.signal {
        crate::model::Signal::Stop => Some("it would stop the sandbox's init, not the workload"),
        crate::model::Signal::Chld => Some("it is the sandbox's init's own, never passed on"),
        _ => None,
    };
    if let Some(why) = lost {
        problems.push(
            Problem::warning(
                at("/stop/signal"),
                format!("{} never reaches the workload: {why}; a stop kills it after stop.timeout", m.stop.signal),
            )
            .with_help("name the signal the command stops on, such as SIGTERM, SIGINT or SIGQUIT"),
        );
    }
    for (i, name) in m.after.iter().enumerate() {
        if let Some(first) = m.after[..i].iter().position(|n| n == name) {
            problems.push(
                Problem::error(at(&format!("/after/{i}")), format!("`{name}` is already after[{first}]"))
                    .with_help("name each workload once"),
            );
        }
    }

    problems.extend(backoff_over_its_max(m.restart.backoff, m.restart.backoff_max, at("/restart/backoff")));
    problems
}

/// Each entry of `ports` that cannot be a published port, at its entry,
/// and then the host ports published twice among the others: the typed
/// manifest stops at the first bad entry (and names the whole array),
/// which would hide the rest. Nothing when every entry is a port (the
/// typed checks say the rest). `json` has passed the schema.
pub fn ports_as_written(json: &serde_json::Value, spans: &SpanIndex) -> Vec<Problem> {
    use serde::Deserialize;
    let Some(entries) = json.get("ports").and_then(serde_json::Value::as_array) else { return Vec::new() };
    let at = |pointer: &str| spans.value_span(pointer).or_else(|| spans.locate(pointer));
    let mut problems = Vec::new();
    let mut ports = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match PortMapping::deserialize(entry) {
            Ok(port) => ports.push((i, port)),
            Err(e) => problems.push(Problem::error(at(&format!("/ports/{i}")), e.to_string())),
        }
    }
    if !problems.is_empty() {
        problems.extend(published_twice(&ports, &at));
    }
    problems
}

/// Each host port published a second time among `ports` (each with its
/// index in the manifest's `ports`), at that entry, naming the first.
fn published_twice(ports: &[(usize, PortMapping)], at: &dyn Fn(&str) -> Option<Range<usize>>) -> Vec<Problem> {
    ports
        .iter()
        .enumerate()
        .filter_map(|(k, (i, port))| {
            let (first, _) = ports[..k].iter().find(|(_, p)| p.collides_with(port))?;
            Some(
                Problem::error(
                    at(&format!("/ports/{i}")),
                    format!("host port {}/{} is already published by ports[{first}]", port.host_port, port.protocol),
                )
                .with_help("publish each host port once"),
            )
        })
        .collect()
}

/// A first restart delay longer than the cap on it (a manifest's
/// `[restart]`, or the configuration's defaults for it), at `span`.
pub(crate) fn backoff_over_its_max(
    backoff: crate::model::Duration,
    backoff_max: crate::model::Duration,
    span: Option<std::ops::Range<usize>>,
) -> Option<Problem> {
    (backoff > backoff_max).then(|| {
        Problem::error(span, format!("backoff ({backoff}) is longer than backoff_max ({backoff_max})"))
            .with_help("make backoff at most backoff_max, which caps the doubling delay")
    })
}

/// What to do when the manifest names host paths that are not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChecks {
    /// Do not look at the host (checking files for another machine).
    Skip,
    /// `paddock check`: a warning, since the file may be meant for another host.
    Warn,
    /// Starting a workload: an error.
    Require,
}

/// Checks against this host's filesystem: mount sources and the rootfs exist.
pub fn host_checks(m: &Manifest, spans: &SpanIndex, mode: HostChecks) -> Vec<Problem> {
    let make = match mode {
        HostChecks::Skip => return Vec::new(),
        HostChecks::Warn => Problem::warning,
        HostChecks::Require => Problem::error,
    };
    let at = |pointer: &str| spans.value_span(pointer).or_else(|| spans.locate(pointer));
    let mut problems = Vec::new();
    match std::fs::metadata(&m.rootfs.path) {
        Ok(meta) if meta.is_dir() => {
            let wanted = Wanted { writable: !m.rootfs.readonly, setuid: false, devices: false };
            problems.extend(host_mount_refuses(&m.rootfs.path, wanted, &|key| at(&format!("/rootfs/{key}"))));
        }
        Ok(_) => {
            problems.push(make(at("/rootfs/path"), format!("rootfs {} is not a directory", m.rootfs.path.display())))
        }
        Err(e) => problems.push(make(at("/rootfs/path"), format!("rootfs {}: {e}", m.rootfs.path.display()))),
    }
    for (i, mount) in m.mounts.iter().enumerate() {
        match std::fs::metadata(&mount.source) {
            Ok(_) => {
                let wanted = Wanted { writable: !mount.readonly, setuid: mount.setuid, devices: mount.devices };
                problems.extend(host_mount_refuses(&mount.source, wanted, &|key| at(&format!("/mounts/{i}/{key}"))));
            }
            Err(e) => problems.push(
                make(at(&format!("/mounts/{i}/source")), format!("mount source {}: {e}", mount.source.display()))
                    .with_help("create it on this host before the workload starts"),
            ),
        }
    }
    problems
}

/// What a manifest asks of a host directory's mount.
#[derive(Clone, Copy)]
struct Wanted {
    writable: bool,
    setuid: bool,
    devices: bool,
}

/// What the host's own mount of `path` keeps from what is `wanted` (a
/// bind keeps the flags of the mount it is made from: it can add
/// restrictions, never lift them, as Docker's `-v` does): a warning at
/// the key that asks for it, for it would be ignored.
fn host_mount_refuses(
    path: &Path,
    wanted: Wanted,
    at: &dyn Fn(&str) -> Option<std::ops::Range<usize>>,
) -> Vec<Problem> {
    use nix::sys::statvfs::FsFlags;
    if !(wanted.writable || wanted.setuid || wanted.devices) {
        return Vec::new();
    }
    let Ok(flags) = nix::sys::statvfs::statvfs(path).map(|s| s.flags()) else { return Vec::new() };
    let shown = path.display();
    [
        (wanted.writable, FsFlags::ST_RDONLY, "readonly", "read-only", "`readonly = false` cannot make it writable"),
        (wanted.setuid, FsFlags::ST_NOSUID, "setuid", "nosuid", "`setuid = true` cannot honour set-user-id bits there"),
        (wanted.devices, FsFlags::ST_NODEV, "devices", "nodev", "`devices = true` cannot open device files there"),
    ]
    .into_iter()
    .filter(|(asked, flag, ..)| *asked && flags.contains(*flag))
    .map(|(_, _, key, how, what)| {
        Problem::warning(at(key), format!("this host mounts {shown} {how}: {what}"))
            .with_help(format!("mount it on the host without {how}, or use another directory"))
    })
    .collect()
}

/// The networks a manifest may name (see `Validator::with_networks`).
pub struct Networks<'a> {
    pub known: &'a [String],
    pub publishing: &'a [String],
    pub refused: &'a super::RefusedNetworks,
}

/// The network a manifest names must be one the daemon knows. `workload`
/// is the manifest's (from its file name), when known.
pub fn network_checks(
    m: &Manifest,
    workload: Option<&WorkloadName>,
    spans: &SpanIndex,
    mode: HostChecks,
    networks: &Networks<'_>,
) -> Vec<Problem> {
    let make = match mode {
        HostChecks::Skip => return Vec::new(),
        HostChecks::Warn => Problem::warning,
        HostChecks::Require => Problem::error,
    };
    let Networks { known, publishing, refused } = *networks;
    let Some(name) = m.namespaces.network.cni() else { return Vec::new() };
    // Defined, and refused: `check` warns. To the daemon, valid while it
    // fits the attachment the workload has (which a bad edit of the
    // definition must not take away); a version that needs a new one is
    // refused, so the running version runs on rather than be stopped for
    // a start that cannot be made.
    if !known.iter().any(|k| k == name)
        && let Some(why) = refused.reason(name)
    {
        let at = spans.value_span("/namespaces/network").or_else(|| spans.locate("/namespaces/network"));
        let upgrade = "the daemon reads the networks directory when it starts (`paddock upgrade` reads it again, \
                       every workload kept running)";
        let help = match (mode, workload.and_then(|w| refused.kept(w, m))) {
            (HostChecks::Warn, _) => {
                format!(
                    "a workload on it keeps the network it has, and cannot start anew until the definition is mended; {upgrade}"
                )
            }
            (_, Some(true)) => return Vec::new(),
            (_, Some(false)) => format!(
                "its sandbox keeps the network it has, made for the ports and hostname it runs with: this version changes them, which needs a new attachment; undo that change, or mend the definition ({upgrade})"
            ),
            (_, None) => format!("a new attachment cannot be made until the definition is mended; {upgrade}"),
        };
        return vec![make(at, format!("the network `{name}` is refused on this host: {why}")).with_help(help)];
    }
    if known.iter().any(|k| k == name) {
        // Capability arguments go only to plugins that declare them: on a
        // network none of whose plugins takes portMappings, ports would be
        // listed and never published.
        if !m.ports.is_empty() && !publishing.iter().any(|p| p == name) {
            let at = spans.locate("/ports");
            return vec![
                make(at, format!("network `{name}` publishes no ports: none of its plugins declares the portMappings capability"))
                    .with_help("add the portmap plugin to the network's plugins, with \"capabilities\": {\"portMappings\": true}, or remove `ports`"),
            ];
        }
        return Vec::new();
    }
    let at = spans.value_span("/namespaces/network").or_else(|| spans.locate("/namespaces/network"));
    let candidates = known.iter().map(String::as_str).chain(["private", "host"]);
    let help = match super::describe::did_you_mean(name, candidates) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!(
            "the networks are \"private\", \"host\" and {}; others are NAME.conflist files in the daemon's networks directory",
            known.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
        ),
    };
    vec![make(at, format!("no network `{name}` on this host")).with_help(help)]
}
