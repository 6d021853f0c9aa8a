//! The daemon's helper children that an upgrade would orphan: the
//! `paddock __enter` processes of exec sessions and probes. The daemon's
//! re-executed image is still their parent, but knows nothing of them:
//! they end once the exec closes their channels, and would stay zombies
//! for as long as the daemon runs. So each is known here by a pidfd while
//! it runs, the pidfds cross the exec (`hand_over`), and the new image
//! reaps each as it ends (`Inherited`).
//!
//! A pidfd names one process, never a pid that was reused: one already
//! reaped by the old image (between its wait and its drop) says so (its
//! fdinfo's pid is -1) and is closed, and no other child's exit can be
//! taken.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{Id, WaitPidFlag, waitid};

use super::sys;

/// Names the inherited pidfds (descriptor numbers, comma-separated) for a
/// re-executed daemon's new image.
pub const INHERITED: &str = "PADDOCK_UNREAPED";

/// This process's helper children that are not reaped yet, by pid, each
/// with a pidfd; inherited ones stay here until reaped, so that a second
/// upgrade hands them on too.
static UNREAPED: Mutex<BTreeMap<u32, Arc<OwnedFd>>> = Mutex::new(BTreeMap::new());

/// `pid` counted among the unreaped, until this is dropped.
#[derive(Debug)]
pub struct Counted {
    pid: u32,
    pidfd: Arc<OwnedFd>,
}

/// Counts `pid` (a child just started) until the answer is dropped.
/// Without a pidfd to be had (out of descriptors), it is not counted: an
/// upgrade meanwhile would leave it a zombie, nothing worse.
pub fn count(pid: u32) -> Option<Counted> {
    let pidfd = Arc::new(sys::pidfd_open(pid as i32).ok()?);
    UNREAPED.lock().ok()?.insert(pid, pidfd.clone());
    Some(Counted { pid, pidfd })
}

impl Drop for Counted {
    fn drop(&mut self) {
        forget(self.pid, &self.pidfd);
    }
}

/// No longer counts `pid`, if it is still counted with `pidfd` (its pid
/// may be another child's by now, counted anew).
fn forget(pid: u32, pidfd: &Arc<OwnedFd>) {
    if let Ok(mut unreaped) = UNREAPED.lock()
        && unreaped.get(&pid).is_some_and(|counted| Arc::ptr_eq(counted, pidfd))
    {
        unreaped.remove(&pid);
    }
}

/// The value of `INHERITED` for the image about to be executed, with each
/// pidfd made to cross the exec; `None` when there are none.
pub fn hand_over() -> Option<String> {
    let unreaped = UNREAPED.lock().ok()?;
    let fds: Vec<String> = unreaped
        .values()
        .filter(|pidfd| sys::set_cloexec(pidfd.as_fd(), false).is_ok())
        .map(|pidfd| pidfd.as_raw_fd().to_string())
        .collect();
    (!fds.is_empty()).then(|| fds.join(","))
}

/// Puts back close-on-exec on every counted pidfd, after an exec that
/// `hand_over` prepared failed: the daemon runs on, and no child of its
/// may inherit them.
pub fn take_back() {
    if let Ok(unreaped) = UNREAPED.lock() {
        for pidfd in unreaped.values() {
            let _ = sys::set_cloexec(pidfd.as_fd(), true);
        }
    }
}

/// The pid a pidfd names, from its fdinfo (-1 once its process was
/// reaped); `None` for a descriptor that is not a pidfd.
fn pid_of(fd: RawFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Pid:")).and_then(|pid| pid.trim().parse().ok())
}

/// The helper children of this process's previous image (`INHERITED`).
pub struct Inherited(Vec<(u32, Arc<OwnedFd>)>);

impl Inherited {
    /// Takes the inherited pidfds (close-on-exec again, so no sandbox gets
    /// one) and unsets `INHERITED` (`sys::take_env`).
    pub fn take() -> Self {
        let Some(list) = sys::take_env(INHERITED) else { return Inherited(Vec::new()) };
        Self::take_from(&list)
    }

    /// The pidfds `list` names (`INHERITED`'s value), taken.
    fn take_from(list: &str) -> Self {
        let mut taken: Vec<(i32, RawFd)> = Vec::new();
        for fd in list.split(',').filter_map(|fd| fd.parse::<RawFd>().ok()) {
            // Only a pidfd is taken (a number that names anything else is
            // left alone); the ones already taken are not taken twice.
            let Some(pid) = pid_of(fd).filter(|_| fd > 2 && !taken.iter().any(|(_, f)| *f == fd)) else {
                continue;
            };
            taken.push((pid, fd));
        }
        let mut inherited: Vec<(u32, Arc<OwnedFd>)> = Vec::new();
        for (pid, fd) in taken {
            // SAFETY: the previous image left this pidfd open for us, and
            // it is taken once (duplicates were dropped above).
            let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = sys::set_cloexec(pidfd.as_fd(), true);
            // One whose process the old image reaped already (-1): closed.
            if let Ok(pid) = u32::try_from(pid) {
                inherited.push((pid, Arc::new(pidfd)));
            }
        }
        if let Ok(mut unreaped) = UNREAPED.lock() {
            unreaped.extend(inherited.iter().cloned());
        }
        Inherited(inherited)
    }

    /// Reaps each as it ends, on a thread of their own (all are watched
    /// at once: one that never ends keeps no other unreaped).
    pub fn reap(self) {
        if self.0.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new().name("reap-inherited".into()).spawn(move || reap_all(self.0));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot wait for the previous image's exec sessions; they stay zombies");
        }
    }
}

fn reap_all(mut pending: Vec<(u32, Arc<OwnedFd>)>) {
    while !pending.is_empty() {
        let mut fds: Vec<PollFd<'_>> =
            pending.iter().map(|(_, pidfd)| PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)).collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait for the previous image's exec sessions; they stay zombies");
                return;
            }
        }
        let ended: Vec<bool> = fds.iter().map(|fd| fd.any().unwrap_or(true)).collect();
        drop(fds);
        let mut ended = ended.into_iter();
        pending.retain(|(pid, pidfd)| {
            if !ended.next().unwrap_or(false) {
                return true;
            }
            // Reaped already by the old image (ECHILD), or now.
            let _ = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED);
            forget(*pid, pidfd);
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inherited_pidfd_is_counted_until_reaped_and_one_reaped_already_is_closed() {
        let mut running = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut reaped = std::process::Command::new("true").spawn().unwrap();
        let (live, done) =
            (sys::pidfd_open(running.id() as i32).unwrap(), sys::pidfd_open(reaped.id() as i32).unwrap());
        reaped.wait().unwrap();
        let (live_fd, done_fd) = (std::os::fd::IntoRawFd::into_raw_fd(live), std::os::fd::IntoRawFd::into_raw_fd(done));
        // As the previous image left them: open across the exec, and a
        // number that is not a pidfd (stdin) beside them.
        let inherited = Inherited::take_from(&format!("{live_fd},{done_fd},0,{live_fd}"));
        assert_eq!(inherited.0.iter().map(|(pid, _)| *pid).collect::<Vec<_>>(), [running.id()], "the live one, once");
        // SAFETY: fcntl on descriptor numbers only, to ask whether they are open.
        let (closed, stdin) = unsafe { (libc::fcntl(done_fd, libc::F_GETFD), libc::fcntl(0, libc::F_GETFD)) };
        assert_eq!(closed, -1, "the reaped one's pidfd is closed");
        assert_ne!(stdin, -1, "a number that is no pidfd is left alone");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fcntl(live_fd, libc::F_GETFD) }, libc::FD_CLOEXEC, "close-on-exec again");
        assert!(hand_over().is_some_and(|fds| fds.split(',').any(|fd| fd == live_fd.to_string())), "handed on");
        take_back();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fcntl(live_fd, libc::F_GETFD) }, libc::FD_CLOEXEC, "taken back after a failed exec");
        running.kill().unwrap();
        // Reaped by the thread, then no longer counted.
        inherited.reap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while UNREAPED.lock().unwrap().contains_key(&running.id()) {
            assert!(std::time::Instant::now() < deadline, "never reaped");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(running.try_wait().is_err(), "reaped by the new image's thread, not here");
    }
}
