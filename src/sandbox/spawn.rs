//! The parent's side: prepares everything, clones the sandbox's first
//! process into new namespaces, maps its ids, places it in its cgroup,
//! hands it its mounts and configuration, and waits for its report.
//!
//! The clone child runs only async-signal-safe code (one read(2), one
//! fcntl(2), execveat(2) on pointers prepared before the clone), so this
//! is safe to call from a multi-threaded process such as the daemon: the
//! child re-executes paddock as `__init`, a fresh single-threaded process,
//! before doing any real work.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::cgroup::{Cgroup, CgroupError, Layout, Limits};
use super::channel::{Channel, ChannelError};
use super::config::{InitConfig, InitMount, InitReport};
use super::sys;
use crate::idmap::Slice;
use crate::model::{Capability, Manifest, Seccomp, SharedOrPrivate, WorkloadName};

/// What to start.
pub struct SpawnRequest<'a> {
    pub name: &'a WorkloadName,
    /// The effective manifest (defaults filled in).
    pub manifest: &'a Manifest,
    pub slice: Slice,
    pub cgroups: &'a Layout,
    /// Idmapped mounts whose source is under this directory must still be
    /// under it once symlinks are resolved.
    pub volumes_root: &'a Path,
    /// Kill the sandbox if the thread that spawned it dies (for `paddock run`).
    pub die_with_parent: bool,
    /// How the sandbox's init starts; see `InitMode`.
    pub init: InitMode,
    /// Where the sandbox's stdout and stderr go (stdin is then /dev/null);
    /// `None` inherits paddock's own.
    pub output: Option<BorrowedFd<'a>>,
}

/// How the clone child becomes the sandbox's init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// Re-execute paddock (`/proc/self/exe __init`): safe from any process,
    /// including a multi-threaded one such as the daemon, because the child
    /// runs only async-signal-safe calls before exec. Costs a process start.
    Exec,
    /// Run the init in the clone child itself. Only for a caller that is
    /// single-threaded when it spawns (`paddock run`): with no other thread,
    /// no lock or allocator state can be held, so the child may run any code.
    InPlace,
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
    #[error("mount source {path}: {errno}")]
    MountSource { path: PathBuf, errno: Errno },
    #[error("idmapped mount source {path} resolves to {resolved}, outside volumes_root {root}")]
    IdmapEscapes { path: PathBuf, resolved: PathBuf, root: PathBuf },
    #[error("idmapping {path}: {errno} (the filesystem may not support idmapped mounts)")]
    Idmap { path: PathBuf, errno: Errno },
    #[error("clone: {0} (are user namespaces enabled? see /proc/sys/user/max_user_namespaces)")]
    Clone(Errno),
    #[error("writing {path}: {source}")]
    WriteMap { path: String, source: std::io::Error },
    #[error("setting RLIMIT_NOFILE: {0}")]
    Rlimit(Errno),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("sandbox setup failed at {step}: {error}")]
    Setup { step: String, error: String },
    #[error("cannot execute {command}: {}", Errno::from_raw(*.errno).desc())]
    Exec { command: String, errno: i32 },
    #[error("the sandbox's init exited before reporting ({0:?})")]
    InitDied(WaitStatus),
}

/// A running sandbox: its init's host pid, a pidfd, its cgroup, and the
/// channel on which the init reports how the workload ended.
#[derive(Debug)]
pub struct Sandbox {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    /// None when nothing needs one (see `needs_cgroup`).
    pub cgroup: Option<Cgroup>,
    channel: Channel,
}

/// How a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    OomKilled,
}

impl Exit {
    /// As a shell reports it: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
            Exit::OomKilled => 128 + libc::SIGKILL,
        }
    }
}

impl Sandbox {
    /// Blocks until the init exits, then kills whatever is left in the
    /// cgroup and removes it: nothing of the sandbox remains.
    pub fn wait(self) -> Exit {
        let status = loop {
            match waitpid(self.pid, None) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        // The init's own report says how the workload ended; without one
        // (the init itself was killed), its wait status is all there is.
        let exit = match (self.channel.recv::<InitReport>(), status) {
            (Ok((InitReport::Exited { signal: Some(sig), .. }, _)), _) => Exit::Signal(sig),
            (Ok((InitReport::Exited { code: Some(code), .. }, _)), _) => Exit::Code(code),
            (_, Ok(WaitStatus::Exited(_, code))) => Exit::Code(code),
            (_, Ok(WaitStatus::Signaled(_, sig, _))) => Exit::Signal(sig as i32),
            _ => Exit::Code(125),
        };
        let oom = self.cgroup.as_ref().is_some_and(Cgroup::oom_killed);
        let exit = if exit == Exit::Signal(libc::SIGKILL) && oom { Exit::OomKilled } else { exit };
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all(Duration::from_secs(5));
            cgroup.remove();
        }
        exit
    }

    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        kill(self.pid, signal)
    }
}

fn capability_mask(manifest: &Manifest) -> u64 {
    if manifest.security.privileged {
        return Capability::ALL.iter().fold(0, |m, c| m | 1 << c.number());
    }
    Capability::DEFAULT_SET.iter().chain(&manifest.security.capabilities).fold(0, |m, c| m | 1 << c.number())
}

/// A detached copy of a host path, made by paddock (real root) so the
/// sandbox never resolves host paths with its own credentials.
fn detached(path: &Path, recursive: bool) -> Result<OwnedFd, SpawnError> {
    let err = |errno| SpawnError::MountSource { path: path.to_owned(), errno };
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| err(Errno::EINVAL))?;
    sys::open_tree_clone(None, &c, recursive).map_err(err)
}

fn init_config(req: &SpawnRequest<'_>) -> InitConfig {
    let m = req.manifest;
    InitConfig {
        hostname: m.hostname.clone().unwrap_or_else(|| req.name.to_string()),
        command: m.command.clone(),
        env: m.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: m.workdir.clone(),
        user: m.user,
        group: m.group,
        rootfs_readonly: m.rootfs.readonly,
        mounts: m.mounts.iter().map(|mt| InitMount { target: mt.target.clone(), is_dir: mt.source.is_dir() }).collect(),
        private_network: m.namespaces.network == SharedOrPrivate::Private,
        private_pid: m.namespaces.pid == SharedOrPrivate::Private,
        capabilities: capability_mask(m),
        no_new_privileges: m.security.no_new_privileges,
        seccomp: m.security.seccomp == Seccomp::Default && !m.security.privileged,
        nofile: m.resources.nofile.map(u64::from),
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

/// The open-files limit this process was started with, when
/// `raise_nofile_limit` raised it: what sandboxes get unless their manifest
/// sets `resources.nofile`.
static INHERITED_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises this process's soft RLIMIT_NOFILE to its hard limit. A
/// supervisor holds a few descriptors per sandbox (pidfd, report channel,
/// log pipe), so 1000 workloads outgrow the usual soft 1024. Sandboxes
/// still start with the original soft limit (as systemd advises: select(2)
/// breaks above 1024). Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit we pass.
    Errno::result(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    let _ = INHERITED_NOFILE.set(limit);
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: a valid rlimit, read just above.
    Errno::result(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) })?;
    Ok(raised.rlim_cur)
}

/// Starts a sandbox. On error nothing is left behind: no process, no cgroup.
pub fn spawn(req: &SpawnRequest<'_>) -> Result<Sandbox, SpawnError> {
    begin(req)?.finish()
}

/// A sandbox whose init has its configuration and is building the root:
/// `finish` waits for its report. Starting many sandboxes, the daemon
/// begins them all and then finishes them, so their inits set up in
/// parallel instead of one after the other.
#[derive(Debug)]
#[must_use = "a pending sandbox must be finished (or dropped, which kills it)"]
pub struct Pending {
    sandbox: Option<Sandbox>,
}

/// Clones the sandbox and sends its init the configuration, without
/// waiting for the init's report (see `Pending`).
pub fn begin(req: &SpawnRequest<'_>) -> Result<Pending, SpawnError> {
    let m = req.manifest;
    let limits = Limits { memory: m.resources.memory.map(|s| s.bytes()), pids: m.resources.pids, cpu: m.resources.cpu };
    let cgroup = if needs_cgroup(req.cgroups, &limits, m) {
        Some(Cgroup::create(req.cgroups, req.name.as_str(), limits)?)
    } else {
        None
    };
    match spawn_in(req, cgroup.as_ref()) {
        Ok((pid, pidfd, channel)) => Ok(Pending { sandbox: Some(Sandbox { pid, pidfd, cgroup, channel }) }),
        Err(e) => {
            discard_cgroup(cgroup.as_ref());
            Err(e)
        }
    }
}

fn discard_cgroup(cgroup: Option<&Cgroup>) {
    if let Some(cgroup) = cgroup {
        cgroup.kill_all(Duration::from_secs(5));
        cgroup.remove();
    }
}

impl Pending {
    /// Waits for the init's report: the sandbox runs its workload, or it
    /// failed and nothing of it is left.
    pub fn finish(mut self) -> Result<Sandbox, SpawnError> {
        let sandbox = self.sandbox.take().expect("finished once");
        match report(sandbox.pid, &sandbox.channel) {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                abandon(&sandbox);
                Err(e)
            }
        }
    }
}

impl Drop for Pending {
    /// Never finished (a panic between begin and finish): nothing is left behind.
    fn drop(&mut self) {
        if let Some(sandbox) = &self.sandbox {
            abandon(sandbox);
        }
    }
}

/// Kills a sandbox that did not start, reaps its init and removes its cgroup.
fn abandon(sandbox: &Sandbox) {
    let _ = kill(sandbox.pid, Signal::SIGKILL);
    let _ = waitpid(sandbox.pid, None);
    discard_cgroup(sandbox.cgroup.as_ref());
}

fn spawn_in(req: &SpawnRequest<'_>, cgroup: Option<&Cgroup>) -> Result<(Pid, OwnedFd, Channel), SpawnError> {
    let m = req.manifest;
    // Everything the clone child touches is prepared here, before the clone.
    let exe =
        open("/proc/self/exe", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(SpawnError::OpenSelf)?;
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

    let rootfs = detached(&m.rootfs.path, false)?;
    let mut mounts = Vec::with_capacity(m.mounts.len());
    for mount in &m.mounts {
        if mount.idmap && mount.source.starts_with(req.volumes_root) {
            let resolved = std::fs::canonicalize(&mount.source).map_err(|e| SpawnError::MountSource {
                path: mount.source.clone(),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
            let root = std::fs::canonicalize(req.volumes_root).unwrap_or_else(|_| req.volumes_root.to_owned());
            if !resolved.starts_with(&root) {
                return Err(SpawnError::IdmapEscapes { path: mount.source.clone(), resolved, root });
            }
        }
        let tree = detached(&mount.source, true)?;
        if mount.readonly && !mount.idmap {
            sys::mount_setattr(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, None, true)
                .map_err(|errno| SpawnError::MountSource { path: mount.source.clone(), errno })?;
        }
        mounts.push(tree);
    }

    let mut flags =
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_PIDFD;
    if m.namespaces.pid == SharedOrPrivate::Private {
        flags |= libc::CLONE_NEWPID;
    }
    if m.namespaces.network == SharedOrPrivate::Private {
        flags |= libc::CLONE_NEWNET;
    }
    let (exe_fd, child_fd) = (exe.as_raw_fd(), child_sock.as_raw_fd());
    let die_with_parent = req.die_with_parent;
    // Opened before the clone: the child may only dup2 what exists.
    let devnull = match req.output {
        Some(_) => {
            Some(open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(SpawnError::DevNull)?)
        }
        None => None,
    };
    let stdio = Stdio {
        input: devnull.as_ref().map_or(-1, |f| f.as_raw_fd()),
        output: req.output.map_or(-1, |f| f.as_raw_fd()),
    };
    let cgroup_dir = match cgroup.and_then(Cgroup::v2_dir) {
        Some(dir) => Some(
            open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(SpawnError::Clone)?,
        ),
        None => None,
    };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a fork-like clone (no CLONE_VM): the child gets a copy of this
    // address space. It runs only the async-signal-safe calls in
    // `child_after_clone`, on memory prepared above, then execs.
    let (ret, placed) = unsafe { clone_sandbox(flags as u64, cgroup_dir.as_ref(), &mut pidfd) };
    if ret == 0 {
        if req.init == InitMode::InPlace {
            // SAFETY: the caller promised a single-threaded process (see `InitMode::InPlace`).
            unsafe { child_in_place(child_fd, die_with_parent, stdio) }
        }
        // SAFETY: see `child_after_clone`; it never returns.
        unsafe { child_after_clone(child_fd, exe_fd, argv.as_ptr(), envp.as_ptr(), die_with_parent, stdio) }
    }
    let pid = Pid::from_raw(Errno::result(ret).map_err(SpawnError::Clone)? as i32);
    // SAFETY: CLONE_PIDFD stored a new descriptor in `pidfd`, which we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // Our copy must go, so that the init's death reads as end-of-file below.
    drop(child_sock);
    let channel = Channel::new(parent_sock);
    let attach = if placed { None } else { cgroup };
    let result = release(req, attach, pid, &channel, rootfs, mounts);
    match result {
        Ok(()) => Ok((pid, pidfd, channel)),
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            Err(e)
        }
    }
}

/// struct clone_args, as of Linux 5.7 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones, into `cgroup_dir` when given and the kernel can (clone3 with
/// CLONE_INTO_CGROUP), else with plain clone. Returns clone's result (0 in
/// the child) and whether the child was born in the cgroup.
///
/// # Safety
/// As fork: the caller's child side must only run async-signal-safe code.
unsafe fn clone_sandbox(flags: u64, cgroup_dir: Option<&OwnedFd>, pidfd: &mut libc::c_int) -> (libc::c_long, bool) {
    if let Some(dir) = cgroup_dir {
        let args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            pidfd: pidfd as *mut libc::c_int as u64,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: `args` is a valid clone_args of the size passed; with no
        // stack given, clone3 continues the child on a copy of ours, as fork.
        let ret =
            unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
        // Kernels before 5.7 lack clone3's cgroup field: fall back below.
        if ret >= 0 || !matches!(Errno::last(), Errno::ENOSYS | Errno::E2BIG) {
            return (ret, ret > 0);
        }
    }
    // SAFETY: clone with a null stack behaves as fork; `pidfd` receives the pidfd (CLONE_PIDFD).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    (ret, false)
}

/// Descriptors the clone child puts on 0, 1 and 2 (-1: leave as is).
#[derive(Clone, Copy)]
struct Stdio {
    input: RawFd,
    output: RawFd,
}

impl Stdio {
    /// dup2 only: async-signal-safe. dup2 clears close-on-exec on the copy.
    ///
    /// # Safety
    /// The descriptors, when not -1, must be open.
    unsafe fn install(self) -> bool {
        // SAFETY: dup2 on open descriptors (the caller's contract).
        unsafe {
            (self.input < 0 || libc::dup2(self.input, 0) == 0)
                && (self.output < 0 || (libc::dup2(self.output, 1) == 1 && libc::dup2(self.output, 2) == 2))
        }
    }
}

/// In the clone child. Async-signal-safe only: no allocation, no locks.
///
/// # Safety
/// `argv` and `envp` must be NULL-terminated arrays of valid C strings, and
/// the descriptors open; the caller must be the child of a fork-like clone.
unsafe fn child_after_clone(
    sock: RawFd,
    exe: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    die_with_parent: bool,
    stdio: Stdio,
) -> ! {
    // SAFETY: raw system calls with valid arguments; see the function's contract.
    unsafe {
        // Wait until the parent has written our id maps and placed us in our cgroup.
        let mut go = 0u8;
        if libc::read(sock, &mut go as *mut u8 as *mut libc::c_void, 1) != 1 {
            libc::_exit(125);
        }
        // Until now we are still the host's root (kuid 0), which the new
        // namespace does not map; becoming its uid/gid 0 (host slice start)
        // is what makes execve grant us full capabilities in it. Raw
        // syscalls: glibc's wrappers would try to signal the parent's threads.
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
        {
            libc::_exit(125);
        }
        if !stdio.install() {
            libc::_exit(125);
        }
        // Only now: a change of credentials clears the parent-death signal.
        if die_with_parent {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        }
        // Nothing the caller holds goes through the exec, even what it got
        // without O_CLOEXEC, but the socket on which the init reads its
        // configuration after exec.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        libc::fcntl(sock, libc::F_SETFD, 0);
        libc::syscall(libc::SYS_execveat, exe, c"".as_ptr(), argv, envp, libc::AT_EMPTY_PATH);
        libc::_exit(125)
    }
}

/// In the clone child of a single-threaded parent: become the namespace's
/// root keeping the capabilities it has in the new namespace, then run the
/// init here, with no exec.
///
/// # Safety
/// The process must have been single-threaded at the clone.
unsafe fn child_in_place(sock: RawFd, die_with_parent: bool, stdio: Stdio) -> ! {
    // SAFETY: raw system calls with valid arguments, in a single-threaded process.
    let switched = unsafe {
        let mut go = 0u8;
        if libc::read(sock, &mut go as *mut u8 as *mut libc::c_void, 1) != 1 {
            libc::_exit(125);
        }
        // Moving from the host's uid 0 to the namespace's (the slice start)
        // would drop every capability; KEEPCAPS keeps the permitted set, and
        // the effective set is raised from it below. (With exec, the kernel
        // grants the namespace's root its capabilities instead.)
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) == 0
            && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
            && libc::syscall(libc::SYS_setresgid, 0, 0, 0) == 0
            && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) == 0
            && stdio.install()
            // After the uid change, which clears the parent-death signal.
            && (!die_with_parent || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0)
    };
    let raised = switched && sys::cap_permitted().and_then(sys::capset).is_ok();
    let code = if raised { super::init::main(sock) } else { 125 };
    // SAFETY: _exit ends this child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

fn write_map(pid: Pid, file: &str, range: crate::idmap::IdRange) -> Result<(), SpawnError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, format!("0 {} {}\n", range.start, range.count))
        .map_err(|source| SpawnError::WriteMap { path, source })
}

/// Maps ids, joins the cgroup, sets rlimits and idmaps, then releases the
/// child and sends it its configuration.
fn release(
    req: &SpawnRequest<'_>,
    attach: Option<&Cgroup>,
    pid: Pid,
    channel: &Channel,
    rootfs: OwnedFd,
    mounts: Vec<OwnedFd>,
) -> Result<(), SpawnError> {
    write_map(pid, "uid_map", req.slice.uid)?;
    write_map(pid, "gid_map", req.slice.gid)?;
    // Before the child runs anything of the workload's, so nothing escapes the limits.
    if let Some(cgroup) = attach {
        cgroup.attach(pid)?;
    }
    // From outside: inside its user namespace the child could not raise a hard limit.
    let nofile = match (req.manifest.resources.nofile, INHERITED_NOFILE.get()) {
        (Some(n), _) => Some(libc::rlimit { rlim_cur: u64::from(n), rlim_max: u64::from(n) }),
        // The daemon raised its own soft limit: the workload gets the one it would have had.
        (None, Some(inherited)) => Some(*inherited),
        (None, None) => None,
    };
    if let Some(limit) = nofile {
        // SAFETY: `limit` is a valid rlimit; the old value is not requested.
        Errno::result(unsafe { libc::prlimit(pid.as_raw(), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) })
            .map_err(SpawnError::Rlimit)?;
    }
    if req.manifest.mounts.iter().any(|m| m.idmap) {
        let userns = open(format!("/proc/{pid}/ns/user").as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|errno| SpawnError::Idmap { path: PathBuf::from("/proc/PID/ns/user"), errno })?;
        for (mount, tree) in req.manifest.mounts.iter().zip(&mounts) {
            if mount.idmap {
                let attrs = sys::MOUNT_ATTR_IDMAP | if mount.readonly { sys::MOUNT_ATTR_RDONLY } else { 0 };
                sys::mount_setattr(tree.as_fd(), attrs, Some(userns.as_fd()), true)
                    .map_err(|errno| SpawnError::Idmap { path: mount.source.clone(), errno })?;
            }
        }
    }
    nix::unistd::write(channel.fd(), &[1u8]).map_err(ChannelError::Io)?;
    let fds: Vec<RawFd> = std::iter::once(&rootfs).chain(&mounts).map(|f| f.as_raw_fd()).collect();
    channel.send(&init_config(req), &fds)?;
    Ok(())
}

/// The init's report on its setup: Ok once the workload runs.
fn report(pid: Pid, channel: &Channel) -> Result<(), SpawnError> {
    match channel.recv::<InitReport>() {
        Ok((InitReport::Started { .. }, _)) => Ok(()),
        Ok((InitReport::SetupFailed { step, error }, _)) => Err(SpawnError::Setup { step, error }),
        Ok((InitReport::ExecFailed { command, errno }, _)) => Err(SpawnError::Exec { command, errno }),
        // The init always reports Started before Exited.
        Ok((report @ InitReport::Exited { .. }, _)) => {
            Err(SpawnError::Setup { step: "report".to_owned(), error: format!("out of order: {report:?}") })
        }
        Err(ChannelError::Closed) => {
            let status = waitpid(pid, None).unwrap_or(WaitStatus::StillAlive);
            Err(SpawnError::InitDied(status))
        }
        Err(e) => Err(e.into()),
    }
}
