//! The zygote: a small process the daemon forks at its start, while it is
//! still single-threaded and small, which clones every sandbox for it (as
//! Android's and Chromium's zygotes fork their apps and renderers).
//!
//! The daemon cannot run a sandbox's init in its own clone child: it has
//! threads, so the child could inherit a lock another thread held, and it
//! would copy the daemon's memory (every manifest's environment) into each
//! sandbox's PID 1. It used to re-execute paddock as the init instead,
//! which costs a process start of its 80 MB binary (about 1.6 ms) on every
//! start and restart. The zygote pays neither: it has one thread and
//! nothing but what the daemon had before it read any manifest, so its
//! clone child runs the init in place (as `paddock run` does).
//!
//! The daemon sends it the clone's flags and the child's descriptors (its
//! channel, stdin and stdout, a network namespace to clone in, a v2 cgroup
//! to clone into); it clones with CLONE_PARENT, so that the init is the
//! daemon's child exactly as a re-executed one was (the daemon reaps it,
//! and its parent-death signal follows the daemon), and sends back the
//! pid and a pidfd. Everything after the clone (id maps, cgroup, records,
//! the init's configuration) stays with the daemon.
//!
//! A zygote that dies is not replaced: the daemon executes inits again.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};

use super::channel::{Channel, ChannelError};
use super::clone::{Child, Stdio, clone_sandbox};
use super::sys;

/// The environment variable through which a daemon that re-executes itself
/// tells the new image its zygote's pid, to be reaped.
pub const PREDECESSOR: &str = "PADDOCK_ZYGOTE_PID";

/// This process's zygote, while it has one (0: none).
static RUNNING: AtomicI32 = AtomicI32::new(0);

/// The pid of this process's zygote, if it started one.
pub fn running() -> Option<i32> {
    Some(RUNNING.load(Ordering::Relaxed)).filter(|pid| *pid > 0)
}

/// What the zygote and the inits it clones are called in `ps`.
const ZYGOTE_NAME: &CStr = c"paddock-zygote";
const INIT_NAME: &CStr = c"paddock-init";

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("the daemon has {0} threads; the zygote must be forked while it has one")]
    Threads(usize),
    #[error("socketpair: {0}")]
    SocketPair(Errno),
    #[error("fork: {0}")]
    Fork(Errno),
    #[error("pidfd_open: {0}")]
    Pidfd(Errno),
    #[error("the zygote cannot be reached: {0}")]
    Gone(ChannelError),
}

/// The daemon's handle on its zygote.
#[derive(Debug)]
pub struct Zygote {
    pid: Pid,
    /// Requests and answers alternate on it: one clone at a time.
    channel: Mutex<Channel>,
}

/// One clone, as the zygote is asked for it; the descriptors travel beside
/// it in this order: the child's channel, then each one present.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    flags: u64,
    #[serde(default)]
    birth: Birth,
    die_with_parent: bool,
    input: bool,
    output: bool,
    netns: bool,
    cgroup: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// With the child's pidfd.
    Cloned {
        pid: i32,
        placed: bool,
    },
    Failed {
        errno: i32,
    },
}

/// What a remapped sandbox is born with that no one may give it after.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Birth {
    /// The host uid that owns its user namespace (`clone_sandbox`).
    pub owner: Option<u32>,
    /// The hard open-files limit the zygote must have room for
    /// (`spawn::room_for_nofile`).
    pub nofile: Option<u64>,
}

/// The descriptors a clone needs, borrowed from the daemon's start.
pub struct CloneFds<'a> {
    pub channel: RawFd,
    pub input: Option<RawFd>,
    pub output: Option<RawFd>,
    pub netns: Option<RawFd>,
    pub cgroup: Option<&'a OwnedFd>,
}

/// How a clone through the zygote went.
pub enum Cloned {
    /// The child's pid, its pidfd, and whether it was born in its cgroup.
    Child(Pid, OwnedFd, bool),
    /// The clone itself failed (as clone(2) would have in the daemon).
    Failed(Errno),
}

impl Zygote {
    /// Forks the zygote. The caller must be single-threaded (checked):
    /// the child runs on, in Rust, with whatever locks the fork copied.
    pub fn start() -> Result<Self, ZygoteError> {
        reap_predecessor();
        let threads = sys::thread_count();
        if threads != 1 {
            return Err(ZygoteError::Threads(threads));
        }
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(ZygoteError::SocketPair)?;
        // The inits' tie to the daemon (see `Child::parent`): opened here,
        // where getpid() is the daemon.
        let daemon = sys::pidfd_open(std::process::id() as i32).map_err(ZygoteError::Pidfd)?;
        // SAFETY: this process has one thread (checked above), so the child
        // inherits no lock or allocator state held elsewhere.
        match unsafe { fork() }.map_err(ZygoteError::Fork)? {
            ForkResult::Child => {
                drop(ours);
                serve(Channel::new(theirs), daemon)
            }
            ForkResult::Parent { child } => {
                RUNNING.store(child.as_raw(), Ordering::Relaxed);
                Ok(Self { pid: child, channel: Mutex::new(Channel::new(ours)) })
            }
        }
    }

    /// Has the zygote clone a sandbox with `flags`. `Err` means the zygote
    /// is gone (start the init some other way); a failed clone is
    /// `Ok(Cloned::Failed)`.
    pub fn clone_sandbox(
        &self,
        flags: u64,
        birth: Birth,
        die_with_parent: bool,
        fds: &CloneFds<'_>,
    ) -> Result<Cloned, ZygoteError> {
        let request = Request {
            flags,
            birth,
            die_with_parent,
            input: fds.input.is_some(),
            output: fds.output.is_some(),
            netns: fds.netns.is_some(),
            cgroup: fds.cgroup.is_some(),
        };
        let sent: Vec<RawFd> =
            [Some(fds.channel), fds.input, fds.output, fds.netns, fds.cgroup.map(AsRawFd::as_raw_fd)]
                .into_iter()
                .flatten()
                .collect();
        let channel = self.channel.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        channel.send(&request, &sent).map_err(ZygoteError::Gone)?;
        // Read even when its pidfd cannot be taken (this process at its
        // descriptor limit): the child is ours, and must not be lost.
        let (reply, pidfds) = channel.recv_or_cut::<Reply>().map_err(ZygoteError::Gone)?;
        match (reply, pidfds.and_then(|mut fds| fds.pop())) {
            (Reply::Cloned { pid, placed }, Some(pidfd)) => Ok(Cloned::Child(Pid::from_raw(pid), pidfd, placed)),
            (Reply::Cloned { pid, .. }, None) => {
                // Our unreaped child (CLONE_PARENT): its pid is its own
                // until we reap it. Without a pidfd it could not be
                // signalled safely once it runs: it goes now, and the
                // start fails as a clone out of descriptors would.
                let pid = Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(pid, None);
                Ok(Cloned::Failed(Errno::EMFILE))
            }
            (Reply::Failed { errno }, _) => Ok(Cloned::Failed(Errno::from_raw(errno))),
        }
    }
}

impl Drop for Zygote {
    /// The zygote reads end-of-file and exits; it is reaped here.
    fn drop(&mut self) {
        RUNNING.store(0, Ordering::Relaxed);
        let channel = self.channel.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = nix::sys::socket::shutdown(channel.fd().as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = waitpid(self.pid, None);
    }
}

/// A daemon that re-executed itself (`paddock upgrade`) left its zygote
/// behind: it read end-of-file when the exec closed its socket and exits,
/// to be reaped by this process, its parent still. The previous image
/// named its pid (`PREDECESSOR`); only that child is waited for, never one
/// found by its name (a process chooses its own name), and not for long:
/// one that does not exit within a second is killed.
fn reap_predecessor() {
    let Some(pid) = sys::take_env(PREDECESSOR).and_then(|p| p.parse::<i32>().ok()) else { return };
    let pid = Pid::from_raw(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return;
            }
            // Reaped, or not our child (nothing to do).
            _ => return,
        }
    }
}

/// The zygote's life: answer requests until the daemon closes its end.
fn serve(channel: Channel, daemon: OwnedFd) -> ! {
    let title = Title::find();
    // Nothing of the daemon's logging: its journald socket's number is
    // closed below and reused, in an init, by its channel to the daemon.
    // (This function never returns, so the guard holds for the zygote's life.)
    let _quiet = tracing::dispatcher::set_default(&tracing::Dispatch::none());
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut gone = libc::pollfd { fd: daemon.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one pollfd on our stack. A pidfd polls readable once
    // its process exited: the daemon died before the signal was armed.
    if unsafe { libc::poll(&mut gone, 1, 0) } != 0 {
        // SAFETY: _exit ends this process without running anything of the daemon's.
        unsafe { libc::_exit(0) };
    }
    title.set(ZYGOTE_NAME);
    // Nothing of the daemon's but what we were given: its lock, listening
    // socket and logs stay with it, and a successor is never locked out.
    let mut keep = [channel.fd().as_raw_fd(), daemon.as_raw_fd()];
    keep.sort_unstable();
    let _ = sys::close_all_but(&keep);
    sys::reset_signal_dispositions();
    sys::ignore_stray_abort();
    // SAFETY: single-threaded; sigprocmask and clearenv touch only this process.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // As the exec'd init had: an empty environment, its strings too
        // (/proc/PID/environ reads the area they were in).
        libc::clearenv();
    }
    title.wipe_environment();
    let home = std::fs::File::open("/proc/self/ns/net").ok().map(OwnedFd::from);
    loop {
        let (request, fds) = match channel.recv::<Request>() {
            Ok(message) => message,
            // SAFETY: as above.
            Err(_) => unsafe { libc::_exit(0) },
        };
        let (reply, pidfd, away) = clone_one(&request, fds, &daemon, &title);
        let sent: Vec<RawFd> = pidfd.iter().map(AsRawFd::as_raw_fd).collect();
        // Answered before anything else can fail: a child cloned is the
        // daemon's (CLONE_PARENT), which must learn its pid to reap it.
        if channel.send(&reply, &sent).is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        if away {
            // Back home, or every later sandbox would start in that namespace.
            let back = home.as_ref().map_or(Err(Errno::ENOENT), |home| setns(home.as_fd(), CloneFlags::CLONE_NEWNET));
            if back.is_err() {
                // SAFETY: _exit only; the daemon sees the zygote gone at its
                // next request and executes inits from then on.
                unsafe { libc::_exit(1) };
            }
        }
    }
}

/// One request: the clone, and in the child the init. Also whether this
/// process is left in the request's network namespace, to leave once the
/// reply is sent.
fn clone_one(request: &Request, fds: Vec<OwnedFd>, daemon: &OwnedFd, title: &Title) -> (Reply, Option<OwnedFd>, bool) {
    let failed = |errno: Errno| (Reply::Failed { errno: errno as i32 }, None, false);
    let wanted = 1 + [request.input, request.output, request.netns, request.cgroup].iter().filter(|x| **x).count();
    if fds.len() != wanted {
        return failed(Errno::EBADF);
    }
    let mut fds = fds.into_iter();
    let mut next = |present: bool| if present { fds.next() } else { None };
    let (channel, input, output, netns, cgroup) =
        (next(true), next(request.input), next(request.output), next(request.netns), next(request.cgroup));
    let Some(channel) = channel else { return failed(Errno::EBADF) };
    let raw = |fd: &Option<OwnedFd>| fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let child = Child {
        parent: daemon.as_raw_fd(),
        die_with_parent: request.die_with_parent,
        channel: channel.as_raw_fd(),
        exe: -1,
        stdio: Stdio { input: raw(&input), output: raw(&output) },
    };
    // The child starts in this process's network namespace.
    if let Some(netns) = &netns
        && let Err(errno) = setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
    {
        return failed(errno);
    }
    let raised = match request.birth.nofile.map(super::spawn::room_for_nofile) {
        Some(Err(errno)) => return (Reply::Failed { errno: errno as i32 }, None, netns.is_some()),
        Some(Ok(raised)) => raised,
        None => None,
    };
    title.set(INIT_NAME);
    let mut pidfd: libc::c_int = -1;
    // SAFETY: this process is single-threaded, so the child may run any
    // code (`Child::run_init`'s contract); a fork-like clone (no CLONE_VM).
    let (ret, placed) = unsafe {
        clone_sandbox(request.flags | libc::CLONE_PARENT as u64, request.birth.owner, cgroup.as_ref(), &mut pidfd)
    };
    if ret == 0 {
        // SAFETY: as above: a single-threaded process's clone child.
        unsafe { child.run_init() }
    }
    super::spawn::put_back_nofile(raised);
    title.set(ZYGOTE_NAME);
    let away = netns.is_some();
    match Errno::result(ret) {
        // SAFETY: CLONE_PIDFD stored a new descriptor in `pidfd`, which we now own.
        Ok(pid) => (Reply::Cloned { pid: pid as i32, placed }, Some(unsafe { OwnedFd::from_raw_fd(pidfd) }), away),
        Err(errno) => (Reply::Failed { errno: errno as i32 }, None, away),
    }
}

/// The process's name in `ps`: its comm (PR_SET_NAME) and its command
/// line, which is the daemon's memory (the area argv was in) until
/// overwritten. Without this, every init would show as `paddock daemon
/// ...`, and `pkill -f 'paddock daemon'` would kill them all.
struct Title {
    /// The argv area, from /proc/self/stat (fields 48 and 49).
    area: Option<(usize, usize)>,
    /// The environment's area (fields 50 and 51).
    environment: Option<(usize, usize)>,
}

impl Title {
    fn find() -> Self {
        let fields: Vec<usize> = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                // Field 3 (state) is rest's first; fields 48 to 51 follow.
                rest.split_whitespace().skip(45).take(4).map(|f| f.parse().ok()).collect()
            })
            .unwrap_or_default();
        let range = |i: usize| Some((*fields.get(i)?, *fields.get(i + 1)?)).filter(|(start, end)| end > start);
        Self { area: range(0), environment: range(2) }
    }

    /// Zeroes the environment's strings (after clearenv, nothing points
    /// at them).
    fn wipe_environment(&self) {
        if let Some((start, end)) = self.environment {
            // SAFETY: [start, end) is this process's own environment area
            // (the kernel's env_start and env_end), mapped and writable;
            // clearenv has emptied `environ`, so nothing reads it.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
        }
    }

    fn set(&self, name: &CStr) {
        // SAFETY: PR_SET_NAME copies at most 16 bytes from a C string.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
        if let Some((start, end)) = self.area {
            let bytes = name.to_bytes();
            let len = end - start;
            let n = bytes.len().min(len - 1);
            // SAFETY: [start, end) is this process's own argv area (the
            // kernel's arg_start and arg_end), mapped and writable; the
            // name is cut to fit and the rest is zeroed, so the area keeps
            // its final NUL.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, n);
                std::ptr::write_bytes((start + n) as *mut u8, 0, len - n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Set in the process the test below runs itself in, alone.
    const ALONE: &str = "PADDOCK_TEST_ZYGOTE_ALONE";

    /// A reply whose pidfd the daemon cannot take (it is at its descriptor
    /// limit) still names the child, which is the daemon's (CLONE_PARENT):
    /// it is killed and reaped, the start fails as a clone out of
    /// descriptors would, and the zygote is kept. (It was taken for the
    /// zygote gone: the child was left unreaped and the zygote dropped.)
    /// A zygote stands in on a thread. Run in a process of its own: it
    /// lowers the process's descriptor limit.
    #[test]
    fn a_reply_whose_pidfd_cannot_be_taken_still_reaps_the_child() {
        if !super::super::alone(
            "sandbox::zygote::tests::a_reply_whose_pidfd_cannot_be_taken_still_reaps_the_child",
            ALONE,
        ) {
            return;
        }
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let (_child_end, child_channel) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        // Our children: one the zygote's handle reaps when dropped, and
        // one the stand-in says it cloned.
        let mut stand_in = Command::new("/bin/true").spawn().unwrap();
        let mut cloned = Command::new("/bin/sleep")
            .arg("100")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pidfd = sys::pidfd_open(cloned.id() as i32).unwrap();
        let zygote = Zygote { pid: Pid::from_raw(stand_in.id() as i32), channel: Mutex::new(Channel::new(ours)) };
        let pid = cloned.id() as i32;
        let answers = std::thread::spawn(move || {
            let channel = Channel::new(theirs);
            let _request = channel.recv_or_cut::<Request>();
            channel.send(&Reply::Cloned { pid, placed: false }, &[pidfd.as_raw_fd()]).unwrap();
            // Kept open until joined, so that no descriptor is freed meanwhile.
            (channel, pidfd)
        });
        // No descriptor can be opened from here on: the lowest free one is the limit.
        let free = std::fs::File::open("/dev/null").unwrap();
        let limit = free.as_raw_fd() as libc::rlim_t;
        drop(free);
        let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit on this process, with rlimits on our stack.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut before);
            let lowered = libc::rlimit { rlim_cur: limit, rlim_max: before.rlim_max };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
        }
        let fds = CloneFds { channel: child_channel.as_raw_fd(), input: None, output: None, netns: None, cgroup: None };
        let outcome = zygote.clone_sandbox(0, Birth::default(), false, &fds);
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &before) };
        let _kept = answers.join().unwrap();
        let shown = match &outcome {
            Ok(Cloned::Child(pid, pidfd, _)) => format!("a child {pid} with pidfd {pidfd:?} (limit {limit})"),
            Ok(Cloned::Failed(errno)) => format!("failed: {errno}"),
            Err(e) => format!("{e}"),
        };
        assert!(matches!(outcome, Ok(Cloned::Failed(Errno::EMFILE))), "{shown}");
        let reaped = cloned.try_wait().map_err(|e| e.raw_os_error());
        assert_eq!(reaped.err(), Some(Some(libc::ECHILD)), "the child was killed and reaped");
        drop(zygote);
        assert!(stand_in.try_wait().is_err(), "reaped by the zygote's handle");
    }
}
