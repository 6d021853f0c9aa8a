//! The sandbox, built by paddock itself with clone(2), mount(2) and the
//! new mount API: user, mount, pid, uts, ipc, cgroup and network
//! namespaces; a pivot_root'ed root; dropped capabilities; seccomp;
//! rlimits and cgroup limits; and a small init as PID 1.

pub mod cgroup;
mod channel;
mod clone;
pub mod config;
pub mod enter;
mod exec;
mod host_mounts;
pub mod init;
mod keeper;
pub mod netns;
pub mod process;
mod rootfs;
mod running;
pub mod seccomp;
mod source;
mod spawn;
mod sys;
pub use sys::{daemon_signals, daemon_wake_signal, set_cloexec, take_env, unblock_daemon_signals};
pub mod unreaped;
pub mod zygote;

pub use crate::model::Exit;
pub use channel::ChannelError;
pub use config::{InitCommand, InitReport};
pub use running::{AdoptError, Sandbox, adopt, end_of};
pub use source::{SourceError, Untrusted, check_mount, open_trusted};
pub use spawn::{
    Cloned, INHERITED_NOFILE_ENV, InitMode, Leftover, Pending, SpawnError, SpawnRequest, begin, inherited_nofile_env,
    raise_nofile_limit, spawn,
};
pub use sys::{Received, is_exhausted, pidfd_getfd, pidfd_open, pidfd_send_signal, recv_with_fds};

/// The step a sandbox reports when it cannot join a session keyring of its
/// own: the host's quota (`kernel.keys.maxkeys`), not the workload's fault.
pub const KEYRING_STEP: &str = exec::Step::Keyring.name();

/// A child whose pid is chosen (clone3's set_tid; root only), which execs
/// `sleep 1000`: for tests that a pid given to another process is never
/// signalled in the place of the one that had it.
#[cfg(test)]
pub(crate) fn child_with_pid(pid: i32) -> Result<nix::unistd::Pid, nix::errno::Errno> {
    let (sleep, arg, long) = (c"/bin/sleep", c"sleep", c"1000");
    let argv = [arg.as_ptr(), long.as_ptr(), std::ptr::null()];
    let tids = [pid as libc::pid_t];
    // SAFETY: clone_args is plain integers, for which all zeroes is valid (no flags, no pointers).
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    args.set_tid = tids.as_ptr() as u64;
    args.set_tid_size = 1;
    // SAFETY: a fork-like clone3 (no CLONE_VM); the child only execs (its
    // arguments prepared above) or exits, as is safe after a fork in a
    // threaded process.
    let ret =
        unsafe { libc::syscall(libc::SYS_clone3, &args as *const libc::clone_args, size_of::<libc::clone_args>()) };
    if ret == 0 {
        // SAFETY: as above.
        unsafe {
            libc::execv(sleep.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    nix::errno::Errno::result(ret).map(|pid| nix::unistd::Pid::from_raw(pid as i32))
}

/// For a test that must run in a process of its own (it changes the
/// process: its descriptor limit, a fork): in the test binary's run,
/// runs the test `name` again alone in a new process, with `alone` set in
/// its environment, checks that it passed, and returns false; in that
/// process, returns true (the test's body goes on).
#[cfg(test)]
pub(crate) fn alone(name: &str, alone: &str) -> bool {
    if std::env::var_os(alone).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(alone, "1")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("1 passed"), "{said}");
    false
}
