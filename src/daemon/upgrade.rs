//! Upgrading in place: the daemon re-executes the binary now installed at
//! its path, keeping its pid (the one systemd watches), its control socket
//! (handed across the exec, so no client is refused meanwhile) and every
//! workload: the new image adopts each running sandbox from its record, as
//! after a crash, except that the inits are still its children.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The environment variable that hands the listening control socket to
/// the re-executed image.
pub const LISTEN_FD: &str = "PADDOCK_LISTEN_FD";

/// The binary at the path this daemon was started from, and whether it
/// was replaced since (a package upgrade unlinks the old file: the kernel
/// then shows `/proc/self/exe` as "PATH (deleted)").
pub fn installed() -> Option<(PathBuf, bool)> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?.into_os_string().into_vec();
    let (path, replaced) = match exe.strip_suffix(b" (deleted)") {
        Some(path) => (path.to_vec(), true),
        None => (exe, false),
    };
    let path = PathBuf::from(OsString::from_vec(path));
    path.exists().then_some((path, replaced))
}

/// The listening socket a previous image of this process handed over, if
/// any (the variable is unset: `take_env`, at the daemon's start).
pub fn inherited_listener() -> Option<OwnedFd> {
    let fd: RawFd = crate::sandbox::take_env(LISTEN_FD)?.parse().ok()?;
    // SAFETY: only paddock sets this, and only when it exec'd itself, for
    // this image to own; taken once (the variable is read only here).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Close-on-exec again: no sandbox may inherit it.
    let _ = crate::sandbox::set_cloexec(owned.as_fd(), true);
    Some(owned)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot re-execute {binary}: {source}")]
pub struct ExecError {
    binary: PathBuf,
    source: std::io::Error,
}

/// Replaces this process with `binary`, with the same arguments, handing
/// it `listener`. Returns only on failure, having changed nothing.
///
/// execve(2) itself, not `Command::exec`, which empties the signal mask
/// first: the signals the loop handles are blocked here, and one pending
/// (a stop asked during the upgrade) must stay so for the next image
/// (`daemon::signals`), not reach this image's handler in the moment
/// before the exec and be lost.
pub fn reexec(binary: &std::path::Path, listener: &OwnedFd) -> ExecError {
    let fd = listener.as_raw_fd();
    let failed = |source: std::io::Error| ExecError { binary: binary.to_owned(), source };
    // It stays open across the exec.
    if let Err(e) = crate::sandbox::set_cloexec(listener.as_fd(), false) {
        return failed(e.into());
    }
    // What this image was handed (left set where it could not be unset,
    // `take_env`) never reaches the next one: only what is set below.
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for handed in
        [crate::sandbox::zygote::PREDECESSOR, crate::sandbox::unreaped::INHERITED, crate::sandbox::INHERITED_NOFILE_ENV]
    {
        env.remove(OsStr::new(handed));
    }
    env.insert(LISTEN_FD.into(), fd.to_string().into());
    // Workloads and execs get the open-files limit the first image was
    // started with, not the one it raised its own to.
    if let Some(soft) = crate::sandbox::inherited_nofile_env() {
        env.insert(crate::sandbox::INHERITED_NOFILE_ENV.into(), soft.into());
    }
    // The zygote reads end-of-file at the exec and exits: the new image
    // reaps it, by the pid given here (see `zygote::reap_predecessor`).
    if let Some(zygote) = crate::sandbox::zygote::running() {
        env.insert(crate::sandbox::zygote::PREDECESSOR.into(), zygote.to_string().into());
    }
    // So are the exec sessions' `__enter`s, once they have hung up.
    if let Some(pidfds) = crate::sandbox::unreaped::hand_over() {
        env.insert(crate::sandbox::unreaped::INHERITED.into(), pidfds.into());
    }
    let c = |s: OsString| CString::new(s.into_vec()).map_err(|e| failed(std::io::Error::other(e)));
    let prepared = (|| {
        let path = c(binary.as_os_str().to_owned())?;
        let argv = std::iter::once(binary.as_os_str().to_owned())
            .chain(std::env::args_os().skip(1))
            .map(c)
            .collect::<Result<Vec<_>, _>>()?;
        let envp = env
            .into_iter()
            .map(|(k, v)| {
                let mut pair = k;
                pair.push("=");
                pair.push(v);
                c(pair)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((path, argv, envp))
    })();
    let error = match prepared {
        Ok((path, argv, envp)) => {
            let Err(errno) = nix::unistd::execve(&path, &argv, &envp);
            failed(errno.into())
        }
        Err(e) => e,
    };
    // The exec failed: close-on-exec again.
    let _ = crate::sandbox::set_cloexec(listener.as_fd(), true);
    crate::sandbox::unreaped::take_back();
    error
}
