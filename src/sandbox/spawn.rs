//! The parent's side: prepares everything, clones the sandbox's first
//! process into new namespaces, maps its ids, places it in its cgroup,
//! hands it its mounts and configuration, and waits for its report.
//!
//! Every host path is resolved once (`source`), and the clone child runs
//! only async-signal-safe code prepared here (`clone`), so this is safe to
//! call from a multi-threaded process: the child re-executes paddock as
//! `__init`, a fresh single-threaded process, before any real work.
//!
//! What the init is told is prepared in `init_config`; a sandbox begun and
//! not yet finished, and what a failed start leaves, are in `pending`.

mod init_config;
mod pending;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::cgroup::{Cgroup, CgroupError, Layout, Limits, Place};
use super::channel::{Channel, ChannelError};
use super::clone::{Child, Stdio, clone_sandbox};
use super::running::Sandbox;
use super::source::{self, SourceError, Sources};
use super::sys;
use super::zygote::{CloneFds, Cloned as ZygoteCloned, Zygote, ZygoteError};
use crate::idmap::Slice;
use crate::model::{Manifest, Network, SharedOrPrivate, WorkloadName};
pub(super) use init_config::INIT_NOFILE;
pub(super) use init_config::from_manifest;
pub use init_config::{INHERITED_NOFILE_ENV, inherited_nofile_env, raise_nofile_limit};
use init_config::{init_config, workload_nofile};
use pending::discard_cgroup;
pub use pending::{Leftover, Pending};

/// What to start.
pub struct SpawnRequest<'a> {
    pub name: &'a WorkloadName,
    /// The effective manifest (defaults filled in).
    pub manifest: &'a Manifest,
    pub slice: Slice,
    pub cgroups: &'a Layout,
    /// Where in it the sandbox's cgroup goes (when it needs one).
    pub cgroup_place: Place<'a>,
    /// Idmapped mounts whose source is under this directory are resolved
    /// beneath it without following symlinks; it must be root's alone.
    pub volumes_root: &'a Path,
    /// Host files paddock made for the sandbox (its network's /etc/hosts
    /// and /etc/resolv.conf), mounted as its manifest says: they need not
    /// lie where others may enter (see `source::prepare`).
    pub own_files: &'a [PathBuf],
    /// Kill the sandbox if the thread that spawned it dies: always while it
    /// is set up; for `paddock run`, for its whole life.
    pub die_with_parent: bool,
    /// Started by the daemon: once running it outlives the daemon, its init
    /// keeps the workload's output (into `output`, the log file) and can be
    /// adopted by a successor (see `InitConfig::supervised`).
    pub supervised: bool,
    /// How the sandbox's init starts; see `InitMode`.
    pub init: InitMode<'a>,
    /// Where the sandbox's stdout and stderr go (stdin is then /dev/null);
    /// `None` inherits paddock's own.
    pub output: Option<BorrowedFd<'a>>,
    /// The network namespace to run in, for a workload on a CNI network:
    /// made and attached by the daemon, kept across restarts.
    pub netns: Option<BorrowedFd<'a>>,
    /// Called once the sandbox exists, while its init builds it and before
    /// the workload may run (the daemon writes its record here, so that a
    /// successor finds every sandbox that ever ran); an error abandons the
    /// start.
    pub on_cloned: Option<&'a OnCloned<'a>>,
}

/// See `SpawnRequest::on_cloned`.
pub type OnCloned<'a> = dyn Fn(&Cloned<'_>) -> std::io::Result<()> + 'a;

/// A sandbox that was cloned and has not been released yet.
pub struct Cloned<'a> {
    pub pid: Pid,
    pub cgroup: Option<&'a Cgroup>,
}

/// How the clone child becomes the sandbox's init.
#[derive(Debug, Clone, Copy)]
pub enum InitMode<'a> {
    /// Re-execute paddock (`/proc/self/exe __init`): safe from any process,
    /// including a multi-threaded one such as the daemon, because the child
    /// runs only async-signal-safe calls before exec. Costs a process start.
    Exec,
    /// Run the init in the clone child itself. Only for a caller that is
    /// single-threaded when it spawns (`paddock run`): with no other thread,
    /// no lock or allocator state can be held, so the child may run any code.
    /// Checked at the spawn: a caller that has another thread by then (a
    /// CNI plugin's output still drained after its timeout) gets `Exec`.
    InPlace,
    /// Have the daemon's zygote clone it and run the init in place (see
    /// `zygote`): no exec, and nothing of the daemon's memory.
    Zygote(&'a Zygote),
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("opening /proc/self/exe to re-execute paddock: {0}")]
    OpenSelf(Errno),
    #[error("opening /dev/null for the sandbox's stdin: {0}")]
    DevNull(Errno),
    #[error("socketpair: {0}")]
    SocketPair(Errno),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "{what} {id} is outside the workload's {size} ids (0-{last}); use an id below {size}",
        last = .size - 1
    )]
    OutsideSlice { what: &'static str, id: u32, size: u32 },
    #[error("cannot record the sandbox before releasing it: {0}")]
    Record(std::io::Error),
    #[error("idmapping {path}: {errno} (the filesystem may not support idmapped mounts)")]
    Idmap { path: PathBuf, errno: Errno },
    #[error("clone: {0} (are user namespaces enabled? see /proc/sys/user/max_user_namespaces)")]
    Clone(Errno),
    #[error("writing {path}: {source}")]
    WriteMap { path: String, source: std::io::Error },
    #[error("setting RLIMIT_NOFILE: {0}")]
    Rlimit(Errno),
    #[error(
        "paddock lacks CAP_SETPCAP, which a remapped sandbox's start needs (its user namespace is made as the workload's root, with paddock's capabilities kept): give it CAP_SETPCAP (a unit's CapabilityBoundingSet=, a container's --cap-add SETPCAP)"
    )]
    NoSetpcap,
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("sandbox setup failed at {step}: {error}")]
    Setup { step: String, error: String },
    #[error("cannot execute {command}: {}", Errno::from_raw(*.errno).desc())]
    Exec { command: String, errno: i32 },
    #[error("the network `{0}` was not attached before the start")]
    NotAttached(String),
    #[error("joining the workload's network namespace: {0}")]
    JoinNetns(Errno),
    #[error("the sandbox's init {} before it reported", died(.0))]
    InitDied(WaitStatus),
    #[error(transparent)]
    Zygote(#[from] ZygoteError),
}

/// How an init died, in words.
fn died(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("was killed by {signal}"),
        other => format!("ended ({other:?})"),
    }
}

/// Whether a sandbox gets a cgroup. On v2 always: the child is created in
/// it (CLONE_INTO_CGROUP), which costs nothing. On v1 a process must be
/// migrated, and the first migration waits for an RCU grace period (5-16 ms
/// measured here), so only when a limit needs it or when the sandbox shares
/// the host's pid namespace: a private pid namespace already holds every
/// process of the sandbox, and the kernel kills them all when its init exits.
fn needs_cgroup(layout: &Layout, limits: &Limits, manifest: &Manifest) -> bool {
    matches!(layout, Layout::V2 { .. }) || limits.any() || manifest.namespaces.pid == SharedOrPrivate::Host
}

/// Starts a sandbox. On error nothing is left behind: no process, no cgroup.
pub fn spawn(req: &SpawnRequest<'_>) -> Result<Sandbox, SpawnError> {
    begin(req)?.finish()
}

/// Clones the sandbox and sends its init the configuration, without
/// waiting for the init's report (see `Pending`).
pub fn begin(req: &SpawnRequest<'_>) -> Result<Pending, SpawnError> {
    let m = req.manifest;
    let limits = Limits { memory: m.resources.memory.map(|s| s.bytes()), pids: m.resources.pids, cpu: m.resources.cpu };
    let cgroup = if needs_cgroup(req.cgroups, &limits, m) {
        Some(Cgroup::create(req.cgroups, req.cgroup_place, limits)?)
    } else {
        None
    };
    match spawn_in(req, cgroup.as_ref()) {
        Ok((pid, pidfd, channel)) => {
            Ok(Pending::begun(Sandbox { pid, pidfd: Some(pidfd), cgroup, channel, child: true }))
        }
        Err(e) => {
            discard_cgroup(cgroup.as_ref());
            Err(e)
        }
    }
}

/// The manifest's user and group must be ids the namespace maps: outside
/// the slice, setresuid would fail only inside the sandbox, as an
/// unhelpful "Invalid argument" at exec.
fn check_ids(req: &SpawnRequest<'_>) -> Result<(), SpawnError> {
    let size = req.slice.uid.count.min(req.slice.gid.count);
    for (what, id) in [("user", req.manifest.user), ("group", req.manifest.group)] {
        if id >= size && req.manifest.namespaces.remapped() {
            return Err(SpawnError::OutsideSlice { what, id, size });
        }
    }
    Ok(())
}

fn spawn_in(req: &SpawnRequest<'_>, cgroup: Option<&Cgroup>) -> Result<(Pid, OwnedFd, Channel), SpawnError> {
    let m = req.manifest;
    check_ids(req)?;
    // Every host path, resolved once, before anything else.
    let sources = source::prepare(m, req.volumes_root, req.own_files)?;
    // In place only while this process has one thread (see `InitMode::InPlace`).
    let init = match req.init {
        InitMode::InPlace if sys::thread_count() != 1 => InitMode::Exec,
        mode => mode,
    };
    if matches!(init, InitMode::InPlace) {
        sys::ignore_stray_abort();
    }
    // Everything the clone child touches is prepared here, before the clone.
    let exe = match init {
        InitMode::Exec => Some(
            open("/proc/self/exe", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(SpawnError::OpenSelf)?,
        ),
        InitMode::InPlace | InitMode::Zygote(_) => None,
    };
    let (parent_sock, child_sock) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(SpawnError::SocketPair)?;
    let argv_owned = [
        c"paddock-init".to_owned(),
        c"__init".to_owned(),
        CString::new(child_sock.as_raw_fd().to_string()).expect("digits have no NUL"),
    ];
    let argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    // The init gets an empty environment: nothing of paddock's (NOTIFY_SOCKET, ...) leaks in.
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];

    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_PIDFD;
    // `user = "host"` (which only the privileged policy allows): no user
    // namespace, so the workload's ids are the host's and its root is the
    // host's root, as `docker run --userns=host`.
    if m.namespaces.remapped() {
        flags |= libc::CLONE_NEWUSER;
    }
    if m.namespaces.pid == SharedOrPrivate::Private {
        flags |= libc::CLONE_NEWPID;
    }
    match (&m.namespaces.network, req.netns) {
        (Network::Private, _) => flags |= libc::CLONE_NEWNET,
        (Network::Host, _) | (Network::Cni(_), Some(_)) => {}
        (Network::Cni(name), None) => return Err(SpawnError::NotAttached(name.clone())),
    }
    // Opened before the clone: the child may only dup2 what exists.
    let devnull = match req.output {
        Some(_) => {
            Some(open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(SpawnError::DevNull)?)
        }
        None => None,
    };
    let cgroup_dir = match cgroup.and_then(Cgroup::v2_dir) {
        Some(dir) => Some(
            open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(SpawnError::Clone)?,
        ),
        None => None,
    };
    // The clone acts as the workload's root with its capabilities kept
    // (`clone::act_as`): without CAP_SETPCAP it would fail as a bare EPERM.
    if owner(req).is_some() && !sys::has_capability(CAP_SETPCAP) {
        return Err(SpawnError::NoSetpcap);
    }
    // Checked here first, so that a refusal is said as the limit's (the
    // process that clones, this one or the zygote, raises its own hard
    // limit for the clone alone: `room_for_nofile`).
    if let Some(hard) = nofile_at_birth(req) {
        within_reach(hard).map_err(SpawnError::Rlimit)?;
    }
    let (pid, pidfd, placed) = match init {
        InitMode::Zygote(zygote) => {
            let fds = CloneFds {
                channel: child_sock.as_raw_fd(),
                input: devnull.as_ref().map(AsRawFd::as_raw_fd),
                output: req.output.map(|f| f.as_raw_fd()),
                netns: req.netns.map(|f| f.as_raw_fd()),
                cgroup: cgroup_dir.as_ref(),
            };
            let birth = super::zygote::Birth { owner: owner(req), nofile: nofile_at_birth(req) };
            match zygote.clone_sandbox(flags as u64, birth, req.die_with_parent, &fds)? {
                ZygoteCloned::Child(pid, pidfd, placed) => (pid, pidfd, placed),
                ZygoteCloned::Failed(errno) => return Err(SpawnError::Clone(errno)),
            }
        }
        InitMode::Exec | InitMode::InPlace => {
            let child = Child {
                parent: 0,
                die_with_parent: req.die_with_parent,
                channel: child_sock.as_raw_fd(),
                exe: exe.as_ref().map_or(-1, |f| f.as_raw_fd()),
                stdio: Stdio {
                    input: devnull.as_ref().map_or(-1, |f| f.as_raw_fd()),
                    output: req.output.map_or(-1, |f| f.as_raw_fd()),
                },
            };
            let raised = match nofile_at_birth(req) {
                Some(hard) => room_for_nofile(hard).map_err(SpawnError::Rlimit)?,
                None => None,
            };
            let cloned = clone_here(req, init, flags, child, cgroup_dir.as_ref(), &argv, &envp);
            put_back_nofile(raised);
            cloned?
        }
    };
    // Our copy must go, so that the init's death reads as end-of-file below.
    drop(child_sock);
    let channel = Channel::new(parent_sock);
    let attach = if placed { None } else { cgroup };
    let result = release(req, attach, cgroup, pid, &channel, sources);
    match result {
        Ok(()) => Ok((pid, pidfd, channel)),
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            Err(e)
        }
    }
}

/// The clone, from this process: re-executing paddock as the init, or (a
/// single-threaded caller) running it in place.
fn clone_here(
    req: &SpawnRequest<'_>,
    init: InitMode<'_>,
    flags: libc::c_int,
    mut child: Child,
    cgroup_dir: Option<&OwnedFd>,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> Result<(Pid, OwnedFd, bool), SpawnError> {
    let parent = sys::pidfd_open(std::process::id() as i32).map_err(SpawnError::Clone)?;
    child.parent = parent.as_raw_fd();
    let mut pidfd: libc::c_int = -1;
    // The child starts in the calling thread's network namespace: this
    // thread joins the workload's for the clone, and leaves it right after.
    let entered = match req.netns {
        Some(netns) => Some(super::netns::Entered::enter(netns).map_err(SpawnError::JoinNetns)?),
        None => None,
    };
    // SAFETY: a fork-like clone (no CLONE_VM): the child gets a copy of this
    // address space and runs only `Child`'s async-signal-safe code on memory
    // prepared above before it execs (or, in place, this process has one
    // thread, checked in `spawn_in`).
    let (ret, placed) = unsafe { clone_sandbox(flags as u64, owner(req), cgroup_dir, &mut pidfd) };
    if ret == 0 {
        match init {
            // SAFETY: this process has one thread (checked in `spawn_in`).
            InitMode::InPlace => unsafe { child.run_init() },
            // SAFETY: argv and envp are NULL-terminated arrays of C strings that
            // outlive the clone; the descriptors are open.
            InitMode::Exec => unsafe { child.exec_init(argv.as_ptr(), envp.as_ptr()) },
            // SAFETY: _exit only: the zygote's clones are made by the zygote.
            InitMode::Zygote(_) => unsafe { libc::_exit(125) },
        }
    }
    drop(entered);
    let pid = Pid::from_raw(Errno::result(ret).map_err(SpawnError::Clone)? as i32);
    // SAFETY: CLONE_PIDFD stored a new descriptor in `pidfd`, which we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((pid, pidfd, placed))
}

/// The host uid that owns a remapped sandbox's user namespace: its root's
/// (`clone_sandbox` says why).
fn owner(req: &SpawnRequest<'_>) -> Option<libc::uid_t> {
    req.manifest.namespaces.remapped().then_some(req.slice.uid.start)
}

/// The capability that keeps the others across a change of uid (prctl's securebits).
const CAP_SETPCAP: u32 = 8;

/// The capability that raises a hard limit.
const CAP_SYS_RESOURCE: u32 = 24;

/// The hard open-files limit a remapped sandbox must be born with: the
/// child no longer has the ids of the process that clones it (its
/// effective uid is the slice's, `owner`), so setting its limits from
/// outside would take CAP_SYS_RESOURCE, which a daemon in a container may
/// lack (`release`); inside, a hard limit can only be lowered.
fn nofile_at_birth(req: &SpawnRequest<'_>) -> Option<u64> {
    owner(req)?;
    workload_nofile(req.manifest).map(|(_, hard)| hard.max(INIT_NOFILE))
}

/// A hard open-files limit the process that clones could not make room
/// for is refused as setrlimit would refuse it: above the kernel's ceiling
/// (fs.nr_open), or above this process's hard limit without
/// CAP_SYS_RESOURCE (the zygote has this process's).
fn within_reach(hard: u64) -> Result<(), Errno> {
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let (_, now) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    match ceiling {
        Some(ceiling) if hard > ceiling => Err(Errno::EPERM),
        _ if hard > now && !sys::has_capability(CAP_SYS_RESOURCE) => Err(Errno::EPERM),
        _ => Ok(()),
    }
}

/// Raises this process's hard RLIMIT_NOFILE to `hard` where it is lower,
/// so that a child cloned now inherits room for it; returns the limit it
/// had, for `put_back_nofile` once the clone is made (a daemon's raised
/// limit would be every later workload's, handed on at an upgrade).
pub(super) fn room_for_nofile(hard: u64) -> Result<Option<libc::rlimit>, Errno> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit we pass.
    Errno::result(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_max >= hard {
        return Ok(None);
    }
    let before = limit;
    limit.rlim_max = hard;
    // SAFETY: a valid rlimit, its soft limit as it was (below the new hard one).
    Errno::result(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    Ok(Some(before))
}

/// This process's open-files limit as it was before `room_for_nofile`
/// (lowering a hard limit needs no privilege).
pub(super) fn put_back_nofile(before: Option<libc::rlimit>) {
    if let Some(before) = before {
        // SAFETY: a valid rlimit, the one this process had.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &before) };
    }
}

fn write_map(pid: Pid, file: &str, range: crate::idmap::IdRange) -> Result<(), SpawnError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, format!("0 {} {}\n", range.start, range.count))
        .map_err(|source| SpawnError::WriteMap { path, source })
}

/// Maps ids, joins the cgroup, sets rlimits and idmaps, releases the
/// child and sends it its configuration, then has the sandbox recorded
/// (while the init builds it) and sends the second byte.
fn release(
    req: &SpawnRequest<'_>,
    attach: Option<&Cgroup>,
    cgroup: Option<&Cgroup>,
    pid: Pid,
    channel: &Channel,
    sources: Sources,
) -> Result<(), SpawnError> {
    if req.manifest.namespaces.remapped() {
        write_map(pid, "uid_map", req.slice.uid)?;
        write_map(pid, "gid_map", req.slice.gid)?;
    }
    // Before the child runs anything of the workload's, so nothing escapes the limits.
    if let Some(cgroup) = attach {
        cgroup.attach(pid)?;
    }
    // From outside: inside its user namespace the child could not raise a
    // hard limit. The init gets room for its own few descriptors; the
    // workload's process sets its own limit (lowering it) before its exec.
    // A remapped child has not our ids (`owner`): it was born with room
    // enough (`nofile_at_birth`), and its init lowers its own.
    if let Some((soft, hard)) = workload_nofile(req.manifest).filter(|_| owner(req).is_none()) {
        let limit = libc::rlimit { rlim_cur: soft.max(INIT_NOFILE), rlim_max: hard.max(INIT_NOFILE) };
        // SAFETY: `limit` is a valid rlimit; the old value is not requested.
        Errno::result(unsafe { libc::prlimit(pid.as_raw(), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) })
            .map_err(SpawnError::Rlimit)?;
    }
    if req.manifest.mounts.iter().any(|m| m.idmap) {
        let userns = open(format!("/proc/{pid}/ns/user").as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|errno| SpawnError::Idmap { path: PathBuf::from("/proc/PID/ns/user"), errno })?;
        for (mount, source) in req.manifest.mounts.iter().zip(&sources.mounts) {
            if mount.idmap {
                sys::mount_setattr(source.tree.as_fd(), sys::MOUNT_ATTR_IDMAP, Some(userns.as_fd()), true)
                    .map_err(|errno| SpawnError::Idmap { path: mount.source.clone(), errno })?;
            }
        }
    }
    nix::unistd::write(channel.fd(), &[1u8]).map_err(ChannelError::Io)?;
    let config = init_config(req, &sources, cgroup.and_then(Cgroup::v2_dir).is_some());
    // A supervised init keeps a copy of the daemon's own end, sent first,
    // through which a successor adopts it (see `adopt`).
    let daemon_end = req.supervised.then(|| channel.fd().as_raw_fd());
    let fds: Vec<RawFd> = daemon_end
        .into_iter()
        .chain(std::iter::once(&sources.rootfs).chain(sources.mounts.iter().map(|s| &s.tree)).map(|f| f.as_raw_fd()))
        .collect();
    channel.send(&config, &fds)?;
    // Recorded while the init builds the root, and before it may run
    // anything of the workload's: it forks the workload only once this
    // second byte comes. Whatever happens to this process from here on, a
    // successor knows of the sandbox (and one killed before it is written
    // takes the sandbox with it: the init is tied to it until it has read
    // the second byte).
    if let Some(record) = req.on_cloned {
        record(&Cloned { pid, cgroup }).map_err(SpawnError::Record)?;
    }
    match nix::unistd::write(channel.fd(), &[1u8]) {
        // An init whose setup failed meanwhile is gone: its report says why.
        Ok(_) | Err(Errno::EPIPE | Errno::ECONNRESET) => Ok(()),
        Err(e) => Err(ChannelError::Io(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::IdRange;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    /// The process that clones raises its hard open-files limit for the
    /// clone alone: put back after, it is not every later workload's (nor
    /// handed on at an upgrade).
    #[test]
    fn room_made_for_a_childs_open_files_limit_is_taken_back() {
        assert!(nix::unistd::geteuid().is_root(), "this test raises a hard limit and must run as root");
        // SAFETY: the child makes only system calls and leaves by _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let hard = || nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap().1;
                let code =
                    if nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 100, 1000).is_err() {
                        1
                    } else {
                        // Raising a hard limit takes CAP_SYS_RESOURCE, which
                        // root in a container may lack (as on this VM): then
                        // refused, and nothing changed.
                        match (room_for_nofile(2000), sys::has_capability(CAP_SYS_RESOURCE)) {
                            (Ok(raised), true) if hard() == 2000 => {
                                put_back_nofile(raised);
                                if hard() == 1000 { 0 } else { 3 }
                            }
                            (Err(Errno::EPERM), false) if hard() == 1000 => 0,
                            _ => 2,
                        }
                    };
                // SAFETY: _exit ends the child without the parent's atexit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => assert_eq!(
                waitpid(child, None).unwrap(),
                WaitStatus::Exited(child, 0),
                "1: could not lower it; 2: not raised (or, without CAP_SYS_RESOURCE, changed); 3: not put back"
            ),
        }
    }

    /// Set in the process the test below runs itself in, alone.
    const ALONE: &str = "PADDOCK_TEST_SPAWN_ALONE";

    /// Nothing of the workload's runs before its sandbox is recorded: the
    /// init builds the root meanwhile and forks the workload only at the
    /// second byte. A record that fails leaves it never run. Run in a
    /// process of its own, and there in a child with one thread, so that
    /// the init runs in place (the test binary cannot be executed as one).
    #[test]
    fn the_workload_runs_only_once_its_sandbox_is_recorded() {
        assert!(nix::unistd::geteuid().is_root(), "this test makes sandboxes and must run as root");
        if !super::super::alone("sandbox::spawn::tests::the_workload_runs_only_once_its_sandbox_is_recorded", ALONE) {
            return;
        }
        // SAFETY: this process runs this test alone; its other thread is
        // libtest's, waiting for this one, holding no lock the child takes
        // (and glibc's fork leaves malloc usable in the child).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let passed = std::panic::catch_unwind(recorded_first).is_ok();
                // SAFETY: ends the child without running the test harness's exit.
                unsafe { libc::_exit(if passed { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0), "the child's panic says why");
            }
        }
    }

    fn recorded_first() {
        assert_eq!(sys::thread_count(), 1, "one thread, for an init in place");
        let out = tempfile::tempdir().unwrap();
        // Writable by the sandbox's root, an unprivileged host uid.
        std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let ran = out.path().join("ran");
        let text = format!(
            "command = [\"/bin/sh\", \"-c\", \"echo ran >> /out/ran\"]\n[[mounts]]\nsource = {:?}\ntarget = \"/out\"\nreadonly = false\n",
            out.path().display().to_string()
        );
        let manifest = toml::from_str::<Manifest>(&text).unwrap().effective("recorded");
        let name = WorkloadName::try_from("recorded").unwrap();
        let layout = Layout::detect(Path::new("/sys/fs/cgroup"));
        let leaf = super::super::cgroup::run_leaf(name.as_str());
        let ids = IdRange { start: 6_090_000, count: 65536 };
        let out_name = out.path().file_name().unwrap().to_string_lossy().into_owned();
        // Once the init is seen waiting for the second byte (a sleep of a
        // fixed time could end while it still built the root, on a slow
        // machine, and the check pass for nothing), a while longer: long
        // enough for it to run the workload, had it not waited.
        let slow = |ok: bool| {
            let (ran, out_name) = (ran.clone(), out_name.clone());
            move |cloned: &Cloned<'_>| {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while !waits_for_its_second_byte(cloned.pid, &out_name) {
                    if ran.exists() {
                        return Err(std::io::Error::other("the workload ran before its record"));
                    }
                    if std::time::Instant::now() > deadline {
                        let syscall = std::fs::read_to_string(format!("/proc/{}/syscall", cloned.pid));
                        return Err(std::io::Error::other(format!(
                            "the init was not seen waiting for its second byte within 30s (its /proc/PID/syscall: {syscall:?})"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(200));
                match (ran.exists(), ok) {
                    (true, _) => Err(std::io::Error::other("the workload ran before its record")),
                    (false, true) => Ok(()),
                    (false, false) => Err(std::io::Error::other("no room")),
                }
            }
        };
        let (recorded, refused) = (slow(true), slow(false));
        let request = SpawnRequest {
            name: &name,
            manifest: &manifest,
            slice: Slice { uid: ids, gid: ids },
            cgroups: &layout,
            cgroup_place: Place::run(&leaf),
            volumes_root: Path::new("/nonexistent"),
            own_files: &[],
            die_with_parent: true,
            supervised: false,
            init: InitMode::InPlace,
            output: None,
            netns: None,
            on_cloned: Some(&recorded),
        };
        let sandbox = spawn(&request).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sandbox.wait(), crate::model::Exit::Code(0));
        assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n", "run once, once recorded");
        std::fs::remove_file(&ran).unwrap();
        let failed = spawn(&SpawnRequest { on_cloned: Some(&refused), ..request });
        assert!(matches!(failed, Err(SpawnError::Record(ref e)) if e.to_string() == "no room"), "{:?}", failed.err());
        std::thread::sleep(Duration::from_millis(200));
        assert!(!ran.exists(), "a sandbox that could not be recorded never runs its workload");
    }

    /// Whether the init `pid` waits for its second byte: blocked reading
    /// one byte of a socket (its channel) with its root built (the test's
    /// directory, `out_name`, mounted at /out), which the read of the
    /// first byte, made before it builds the root, is not.
    fn waits_for_its_second_byte(pid: Pid, out_name: &str) -> bool {
        let Ok(syscall) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else { return false };
        // "NR ARG1 ... ARG6 SP PC" while blocked in a system call, in hex but NR.
        let fields: Vec<&str> = syscall.split_whitespace().collect();
        let reads_one_byte = fields.first().and_then(|nr| nr.parse::<libc::c_long>().ok()) == Some(libc::SYS_read)
            && fields.get(3) == Some(&"0x1");
        let of_a_socket = fields
            .get(1)
            .and_then(|fd| i32::from_str_radix(fd.trim_start_matches("0x"), 16).ok())
            .and_then(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
            .is_some_and(|link| link.to_string_lossy().starts_with("socket:"));
        // Mount points are as the init sees them, from its own root.
        let built = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).is_ok_and(|table| {
            table.lines().any(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                fields.get(4) == Some(&"/out") && fields.get(3).is_some_and(|root| root.ends_with(out_name))
            })
        });
        reads_one_byte && of_a_socket && built
    }
}
