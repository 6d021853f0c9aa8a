//! What the sandbox's init is told, prepared from the manifest: its
//! configuration (`InitConfig`: the command, mounts, namespaces,
//! capabilities, seccomp), and the open-files limit it and its workload
//! get, which is the one the daemon was started with unless the manifest
//! sets its own.

use nix::errno::Errno;

use super::SpawnRequest;
use crate::model::{Capability, Manifest, Network, Seccomp, SharedOrPrivate, WorkloadName};
use crate::sandbox::config::{InitConfig, InitMount};
use crate::sandbox::source::Sources;

/// The capabilities the workload keeps, as a mask: the default set and
/// the manifest's, or every one for a privileged workload.
fn capability_mask(manifest: &Manifest) -> u64 {
    if manifest.security.privileged {
        // Every capability this kernel and this process can give: in a
        // user namespace of its own, all of them (the namespace's are
        // full); in the host's, those paddock holds itself (a daemon whose
        // unit or container dropped some cannot pass them on).
        let all = Capability::ALL.iter().fold(0, |m, c| m | 1 << c.number());
        return if manifest.namespaces.remapped() {
            all
        } else {
            all & crate::sandbox::sys::cap_permitted().unwrap_or(0)
        };
    }
    Capability::DEFAULT_SET.iter().chain(&manifest.security.capabilities).fold(0, |m, c| m | 1 << c.number())
}

/// The configuration sent to the sandbox's init; `cgroup2`: it was born
/// in a cgroup v2 of its own (`InitConfig::cgroup2`).
pub(super) fn init_config(req: &SpawnRequest<'_>, sources: &Sources, cgroup2: bool) -> InitConfig {
    let mounts = req.manifest.mounts.iter().zip(&sources.mounts);
    let cfg = from_manifest(req.name, req.manifest);
    let sys_beneath = (cfg.mask_paths && !cfg.own_network).then(crate::sandbox::host_mounts::beneath_sys).flatten();
    InitConfig {
        mounts: mounts.map(|(mt, src)| InitMount { target: mt.target.clone(), is_dir: src.is_dir }).collect(),
        supervised: req.supervised,
        sys_beneath,
        cgroup2,
        ..cfg
    }
}

/// What the manifest of the workload `name` makes of a sandbox, with no
/// mounts and not supervised: the start's configuration (`init_config`)
/// and the one of a command entering the sandbox (`enter::workload`) are
/// both this, and differ only where they say so.
pub(in crate::sandbox) fn from_manifest(name: &WorkloadName, m: &Manifest) -> InitConfig {
    InitConfig {
        hostname: m.hostname.clone().unwrap_or_else(|| name.to_string()),
        command: m.command.clone(),
        env: m.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: m.workdir.clone(),
        user: m.user,
        group: m.group,
        rootfs_readonly: m.rootfs.readonly,
        mounts: Vec::new(),
        own_network: m.namespaces.network == Network::Private,
        private_pid: m.namespaces.pid == SharedOrPrivate::Private,
        capabilities: capability_mask(m),
        no_new_privileges: m.security.no_new_privileges,
        seccomp: m.security.seccomp == Seccomp::Default && !m.security.privileged,
        mask_paths: !m.security.privileged,
        sys_beneath: None,
        cgroup2: false,
        host_devices: m.security.privileged,
        nodev: !m.security.privileged,
        readonly_proc: !m.security.privileged && !m.namespaces.remapped(),
        nofile: workload_nofile(m),
        supervised: false,
    }
}

/// Descriptors the init may hold itself (its channel, the log, a pipe, a
/// signalfd...), whatever limit its workload has.
pub(in crate::sandbox) const INIT_NOFILE: u64 = 64;

/// The workload's RLIMIT_NOFILE (soft, hard): the manifest's, or the one
/// the daemon was started with (it raised its own, see `raise_nofile_limit`).
pub(super) fn workload_nofile(m: &Manifest) -> Option<(u64, u64)> {
    match (m.resources.nofile, INHERITED_NOFILE.get()) {
        (Some(n), _) => Some((u64::from(n), u64::from(n))),
        (None, Some(inherited)) => Some((inherited.rlim_cur, inherited.rlim_max)),
        (None, None) => None,
    }
}

/// The open-files limit this process was started with, when
/// `raise_nofile_limit` raised it: what sandboxes get unless their manifest
/// sets `resources.nofile`.
static INHERITED_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// The environment variable that hands the soft open-files limit the
/// daemon was started with to its next image (an in-place upgrade).
pub const INHERITED_NOFILE_ENV: &str = "PADDOCK_INHERITED_NOFILE";

/// What to set `INHERITED_NOFILE_ENV` to for the next image, if anything.
pub fn inherited_nofile_env() -> Option<String> {
    INHERITED_NOFILE.get().map(|limit| limit.rlim_cur.to_string())
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit. A
/// supervisor holds a few descriptors per sandbox (pidfd, report channel,
/// log pipe), so 1000 workloads outgrow the usual soft 1024. Sandboxes
/// still start with the original soft limit (as systemd advises: select(2)
/// breaks above 1024). Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit we pass.
    Errno::result(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    // An upgraded image was started by a raised one: the limit the first
    // was started with comes in the environment (`inherited_nofile_env`).
    let handed = crate::sandbox::take_env(INHERITED_NOFILE_ENV).and_then(|soft| soft.parse().ok());
    if let Some(soft) = handed.filter(|soft| *soft <= limit.rlim_max) {
        limit.rlim_cur = soft;
    }
    let _ = INHERITED_NOFILE.set(limit);
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: a valid rlimit, read just above.
    Errno::result(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) })?;
    Ok(raised.rlim_cur)
}
