//! The workload's own process: forked by the init after the root is built,
//! it drops to the manifest's identity and privileges and executes the
//! command. The order matters and each step says why it is where it is.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::config::InitConfig;
use super::seccomp::BpfProgram;
use super::sys;
use nix::errno::Errno;
use nix::unistd::{Gid, Uid, chdir, setresgid, setresuid};
use std::os::fd::RawFd;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything `exec` needs, prepared in the init before it forks.
pub struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: PathBuf,
    uid: u32,
    gid: u32,
    capabilities: u64,
    no_new_privileges: bool,
    seccomp: Vec<BpfProgram>,
    /// The filter is loaded and the bounding set cut already, by the init
    /// before it forked (`apply_before_fork`): the child inherits them.
    applied: bool,
    nofile: Option<(u64, u64)>,
    /// Killed when the process that forked it dies (an entered command
    /// whose `paddock __enter` is killed, say at a probe's timeout): that
    /// process's pid as this one sees it (0 from a pid namespace it is
    /// not in). Set last: a change of credentials clears it. A parent that
    /// died before is never signalled for: the child, reparented, finds
    /// another parent then, and does not execute.
    pub die_with_parent: Option<libc::pid_t>,
    /// A pipe's read end the child waits on just before its execve, until
    /// the init that forked it has confined itself (`confine_init`): so the
    /// workload never runs beside an init with more privileges than its own.
    pub go: Option<RawFd>,
}

/// The command's path: as given when it has a `/`, else searched in PATH
/// (the workload's own, or the default) inside the new root.
fn resolve(command: &str, path_var: &str) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command));
    }
    path_var.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(command)).find(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
    })
}

fn cstring(s: impl AsRef<OsStr>) -> Result<CString, Errno> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Builds argv, envp and the seccomp programs. Runs in the init, after the
/// pivot, so PATH is searched in the sandbox's root.
pub fn prepare(cfg: &InitConfig, seccomp: Vec<BpfProgram>) -> Result<Prepared, (String, Errno)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), cfg.hostname.clone()),
        ("HOME".into(), if cfg.user == 0 { "/root".into() } else { "/".into() }),
    ];
    for (k, v) in &cfg.env {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    let path_var = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
    let command = cfg.command.first().ok_or_else(|| (String::new(), Errno::EINVAL))?;
    let program = resolve(command, path_var).ok_or_else(|| (command.clone(), Errno::ENOENT))?;
    let bad = |_| (command.clone(), Errno::EINVAL);
    Ok(Prepared {
        program: cstring(&program).map_err(bad)?,
        argv: cfg.command.iter().map(cstring).collect::<Result<_, _>>().map_err(bad)?,
        envp: env.iter().map(|(k, v)| cstring(format!("{k}={v}"))).collect::<Result<_, _>>().map_err(bad)?,
        workdir: cfg.workdir.clone(),
        uid: cfg.user,
        gid: cfg.group,
        capabilities: cfg.capabilities,
        no_new_privileges: cfg.no_new_privileges,
        seccomp,
        applied: false,
        nofile: cfg.nofile,
        die_with_parent: None,
        go: None,
    })
}

/// The workload's steps after the fork, so a failure names its step
/// ("setresuid: Invalid argument", not "cannot execute").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    CloseDescriptors,
    Chdir,
    Rlimit,
    Setgroups,
    Seccomp,
    BoundingSet,
    Setresgid,
    Setresuid,
    Capset,
    Ambient,
    NoNewPrivs,
    Execve,
    Keyring,
    SavedGroup,
}

impl Step {
    const ALL: [Step; 14] = [
        Step::CloseDescriptors,
        Step::Chdir,
        Step::Rlimit,
        Step::Setgroups,
        Step::Seccomp,
        Step::BoundingSet,
        Step::Setresgid,
        Step::Setresuid,
        Step::Capset,
        Step::Ambient,
        Step::NoNewPrivs,
        Step::Execve,
        Step::Keyring,
        Step::SavedGroup,
    ];

    pub fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.get(n as usize).copied()
    }

    /// The step as a report names it.
    pub const fn name(self) -> &'static str {
        match self {
            Step::CloseDescriptors => "close the init's descriptors",
            Step::Chdir => "chdir to the workdir",
            Step::Rlimit => "set RLIMIT_NOFILE",
            Step::Setgroups => "setgroups",
            Step::Seccomp => "load the seccomp filter",
            Step::BoundingSet => "drop the capability bounding set",
            Step::Setresgid => "setresgid to the manifest's group",
            Step::Setresuid => "setresuid to the manifest's user",
            Step::Capset => "set capabilities",
            Step::Ambient => "clear ambient capabilities",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Execve => "execute the command",
            Step::Keyring => "join a session keyring of its own",
            Step::SavedGroup => {
                "keep the init's saved group apart (so that no process of the sandbox may set its limits)"
            }
        }
    }
}

trait At<T> {
    fn at(self, step: Step) -> Result<T, (Step, Errno)>;
}

impl<T> At<T> for Result<T, Errno> {
    fn at(self, step: Step) -> Result<T, (Step, Errno)> {
        self.map_err(|e| (step, e))
    }
}

/// In the forked child: become the workload and execute it. Returns only
/// on failure, with the step and the errno to report.
pub fn exec(p: &Prepared) -> (Step, Errno) {
    match setup(p) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn setup(p: &Prepared) -> Result<std::convert::Infallible, (Step, Errno)> {
    // Only stdin, stdout and stderr go on: not the init's channel to the
    // daemon (a workload could forge reports on it), nor anything the
    // daemon inherited without O_CLOEXEC.
    sys::cloexec_from(3).at(Step::CloseDescriptors)?;
    // Ignored signals stay ignored across execve, and Rust's runtime ignores
    // SIGPIPE in the init: give the workload every default back.
    sys::reset_signal_dispositions();
    chdir(&p.workdir).at(Step::Chdir)?;
    // The workload's own limit (the init, whose limit was set from outside,
    // holds a few more descriptors of its own).
    if let Some((soft, hard)) = p.nofile {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard).at(Step::Rlimit)?;
    }
    // Supplementary groups would carry the init's; the workload has none.
    nix::unistd::setgroups(&[]).at(Step::Setgroups)?;
    if !p.applied {
        filter_and_bound(&p.seccomp, p.capabilities)?;
    }
    setresgid(Gid::from_raw(p.gid), Gid::from_raw(p.gid), Gid::from_raw(p.gid)).at(Step::Setresgid)?;
    setresuid(Uid::from_raw(p.uid), Uid::from_raw(p.uid), Uid::from_raw(p.uid)).at(Step::Setresuid)?;
    // What the kernel made of it (an id of -1 means "unchanged" to it).
    let ids = nix::unistd::getresuid().at(Step::Setresuid)?;
    let gids = nix::unistd::getresgid().at(Step::Setresgid)?;
    if [ids.real, ids.effective, ids.saved].iter().any(|u| u.as_raw() != p.uid) {
        return Err((Step::Setresuid, Errno::EPERM));
    }
    if [gids.real, gids.effective, gids.saved].iter().any(|g| g.as_raw() != p.gid) {
        return Err((Step::Setresgid, Errno::EPERM));
    }
    // The id change made this process dumpable again where the host's
    // fs.suid_dumpable says so: until its execve it still holds the
    // init's descriptors (close-on-exec, not closed), which the
    // workload's other processes of its uid must not reach by ptrace.
    // SAFETY: prctl with integer arguments only.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).at(Step::Setresuid)?;
    // A non-root user lost every capability in setresuid (no KEEPCAPS), as in Docker.
    sys::capset(if p.uid == 0 { p.capabilities } else { 0 }).at(Step::Capset)?;
    // SAFETY: prctl with integer arguments only.
    Errno::result(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) })
        .at(Step::Ambient)?;
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        Errno::result(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).at(Step::NoNewPrivs)?;
    }
    if let Some(parent) = p.die_with_parent {
        // SAFETY: prctl with integer arguments only.
        Errno::result(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }).at(Step::Execve)?;
        // Its parent died before that (helper-106): nothing would kill it.
        if nix::unistd::getppid().as_raw() != parent {
            return Err((Step::Execve, Errno::ESRCH));
        }
    }
    if let Some(go) = p.go {
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: a one-byte buffer we own; `go` is open (CLOEXEC: it goes at the exec).
            match unsafe { libc::read(go, byte.as_mut_ptr().cast(), 1) } {
                1 => break,
                -1 if Errno::last() == Errno::EINTR => continue,
                // The init is gone, or could not confine itself: no exec.
                _ => return Err((Step::Execve, Errno::EPIPE)),
            }
        }
    }
    nix::unistd::execve(&p.program, &p.argv, &p.envp).at(Step::Execve)
}

/// Loads the seccomp filter and cuts the bounding set to `capabilities`.
/// Seccomp before dropping capabilities: loading a filter without
/// no_new_privs needs CAP_SYS_ADMIN (in this user namespace), which the
/// workload may not keep. The filter allows every call that follows, and
/// the init's own until it execs nothing more.
fn filter_and_bound(seccomp: &[BpfProgram], capabilities: u64) -> Result<(), (Step, Errno)> {
    for program in seccomp {
        sys::seccomp_load(program).at(Step::Seccomp)?;
    }
    bound(!capabilities)
}

/// Drops the capabilities `drop` from the bounding set. Before setuid:
/// after it the capability to drop them is gone. The first this kernel
/// does not know (EINVAL) ends it: capabilities are numbered without gaps.
fn bound(drop: u64) -> Result<(), (Step, Errno)> {
    for cap in 0..64 {
        if drop & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
            match Errno::result(rc) {
                Ok(_) => {}
                Err(Errno::EINVAL) => break,
                Err(e) => return Err((Step::BoundingSet, e)),
            }
        }
    }
    Ok(())
}

/// CAP_KILL: the one capability the init keeps (see `confine_init`).
const CAP_KILL: u32 = 5;

impl Prepared {
    /// In the init, just before it forks the workload: the workload's
    /// seccomp filter and bounding set, for both. The child inherits them
    /// (one filter for the two, loaded and compiled once), and the init
    /// keeps them (`confine_init`).
    pub fn apply_before_fork(&mut self) -> Result<(), (Step, Errno)> {
        filter_and_bound(&self.seccomp, self.capabilities)?;
        self.applied = true;
        Ok(())
    }

    /// The init, once its workload runs: no more privileged than the
    /// workload it keeps. Under the workload's seccomp filter and bounding
    /// set (`apply_before_fork`), it keeps CAP_KILL alone (to signal a
    /// workload that runs as another user, and to kill whatever is left at
    /// the end), and sets no_new_privs. So a workload that can trace it
    /// (one given SYS_PTRACE, when the init was executed inside the user
    /// namespace rather than cloned from the host) gains nothing of the
    /// sandbox's setup privileges by it.
    pub fn confine_init(&self) -> Result<(), (Step, Errno)> {
        let keep = 1u64 << CAP_KILL;
        // What `apply_before_fork` left in the bounding set, but CAP_KILL.
        bound(if self.applied { self.capabilities & !keep } else { !keep })?;
        // A saved group apart from its real and effective one, while it may
        // still change it: the kernel lets a process whose real ids equal
        // all of another's set that one's resource limits (prlimit), its
        // dumpability aside, and the workload's root has this init's ids
        // (with RLIMIT_FSIZE it could make the log's writes fail at will,
        // with RLIMIT_CPU kill the init). No process has three groups that
        // differ. Its files and signals go by its effective ids, unchanged.
        // A slice of one id maps no other group: then it is left as it is.
        let gids = nix::unistd::getresgid().at(Step::SavedGroup)?;
        let apart = Gid::from_raw(u32::from(gids.effective.as_raw() == 0));
        match setresgid(gids.real, gids.effective, apart) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err((Step::SavedGroup, e)),
        }
        sys::capset(keep).at(Step::Capset)?;
        // SAFETY: prctl with integer arguments only.
        Errno::result(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) })
            .at(Step::Ambient)?;
        // SAFETY: prctl with integer arguments only.
        Errno::result(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).at(Step::NoNewPrivs)?;
        Ok(())
    }
}

/// Joins a new anonymous session keyring, as runc gives each container:
/// keyrings are not namespaced, and the one this process came with is its
/// starter's (the daemon's, or the operator's under `paddock run`), whose
/// keys it would possess. For processes the seccomp filter does not keep
/// from keyrings; the keyring counts against the quota of the host user
/// the namespace's root is (`kernel.keys.maxkeys`). A kernel without
/// keyrings (ENOSYS), or a filter of the host's that refuses them (EPERM,
/// paddock itself in a container), has nothing to share; but a refused
/// join with the starter's keyring still in reach (an LSM that denies
/// making a keyring, not using one) fails, rather than share it.
pub fn join_own_session_keyring() -> Result<(), Errno> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) takes no memory
    // but the null name (a new anonymous keyring).
    let joined =
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, std::ptr::null::<libc::c_char>()) };
    match Errno::result(joined) {
        Ok(_) | Err(Errno::ENOSYS) => Ok(()),
        Err(Errno::EPERM) => {
            // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, id, 0) takes integers only.
            // (Without a session keyring it may make the user's; harmless.)
            let reached =
                unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) };
            match Errno::result(reached) {
                Ok(_) => Err(Errno::EPERM),
                Err(_) => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

/// In the forked child, after `exec` failed: says which step and why on
/// `to` (a CLOEXEC pipe, so a successful exec says nothing), then exits.
pub fn report_failure(to: &std::os::fd::OwnedFd, (step, errno): (Step, Errno)) -> ! {
    let mut failed = [0u8; 8];
    failed[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    failed[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
    let _ = nix::unistd::write(to, &failed);
    // SAFETY: _exit ends the process without running the parent's atexit handlers.
    unsafe { libc::_exit(127) }
}

/// In the parent: what `report_failure` said, or None when the exec succeeded.
pub fn read_failure(from: &std::os::fd::OwnedFd) -> Option<(Step, Errno)> {
    let mut buf = [0u8; 8];
    let n = nix::unistd::read(from, &mut buf).unwrap_or(0);
    (n == 8).then(|| {
        let step = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes"));
        let errno = i32::from_ne_bytes(buf[4..].try_into().expect("4 bytes"));
        (Step::from_u32(step).unwrap_or(Step::Execve), Errno::from_raw(errno))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `join_own_session_keyring` in a child under a filter that refuses
    /// keyctl's operation `op` with EPERM (every operation with `None`):
    /// Ok, or the errno.
    fn join_under_filter(op: Option<u32>) -> Result<(), Errno> {
        const LD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
        let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let op_check = match op {
            // args[0]'s low word (little-endian), then: this operation?
            Some(op) => f(JEQ, 0, 1, op),
            None => f((libc::BPF_JMP | libc::BPF_JA) as u16, 0, 0, 0),
        };
        let program = [
            f(LD, 0, 0, 0),
            f(JEQ, 0, 3, libc::SYS_keyctl as u32),
            f(LD, 0, 0, 16),
            op_check,
            f(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            f(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
        ];
        // SAFETY: the child makes only system calls (no allocation, no
        // lock another thread may hold) and leaves by _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: prctl with integer arguments only.
                let code = if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0
                    || crate::sandbox::sys::seccomp_load(&program).is_err()
                {
                    255
                } else {
                    match join_own_session_keyring() {
                        Ok(()) => 0,
                        Err(e) => e as i32,
                    }
                };
                // SAFETY: _exit ends the child without the parent's atexit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                nix::sys::wait::WaitStatus::Exited(_, 255) => panic!("the filter could not be loaded"),
                nix::sys::wait::WaitStatus::Exited(_, errno) => Err(Errno::from_raw(errno)),
                other => panic!("{other:?}"),
            },
        }
    }

    /// A child whose parent is not the one it was to die with (that one
    /// died before its parent-death signal was set) does not execute.
    #[test]
    fn a_child_whose_parent_died_before_its_death_signal_was_set_does_not_execute() {
        let run = |parent: Option<libc::pid_t>| {
            let p = Prepared {
                program: c"/bin/true".into(),
                argv: vec![c"true".into()],
                envp: Vec::new(),
                workdir: "/".into(),
                uid: 0,
                gid: 0,
                capabilities: 0,
                no_new_privileges: false,
                seccomp: Vec::new(),
                applied: true,
                nofile: None,
                die_with_parent: parent,
                go: None,
            };
            // SAFETY: the child makes only system calls (no allocation, no
            // lock another thread may hold) and leaves by execve or _exit.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let code = match exec(&p) {
                        (Step::Execve, Errno::ESRCH) => 3,
                        _ => 4,
                    };
                    // SAFETY: _exit ends the child without the parent's atexit handlers.
                    unsafe { libc::_exit(code) }
                }
                nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("{other:?}"),
                },
            }
        };
        assert_eq!(run(Some(nix::unistd::getpid().as_raw())), 0, "its parent: executed");
        assert_eq!(run(Some(0)), 3, "another parent: not executed");
        assert_eq!(run(None), 0);
    }

    /// A filter that refuses keyrings outright leaves nothing to share; one
    /// that refuses only making one leaves the starter's in reach: refused.
    #[test]
    fn a_refused_join_passes_only_when_no_keyring_is_in_reach() {
        assert_eq!(join_under_filter(None), Ok(()));
        assert_eq!(join_under_filter(Some(1)), Err(Errno::EPERM), "KEYCTL_JOIN_SESSION_KEYRING alone refused");
        assert_eq!(join_under_filter(Some(99)), Ok(()), "joined");
    }
}
