//! Network namespaces that outlive their sandbox: made by the daemon (so
//! they belong to the host's user namespace, and a workload's root cannot
//! change its own interfaces, routes or firewall), kept alive by a bind
//! mount of the namespace file, as `ip netns add` and kubelet's pod
//! sandboxes do, and joined by each sandbox that runs in them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("creating the network namespace's mount point {path}: {source}")]
    MountPoint { path: String, source: std::io::Error },
    #[error("creating a network namespace: {0}")]
    Unshare(Errno),
    #[error("keeping the network namespace at {path} (bind mount): {errno}")]
    Bind { path: String, errno: Errno },
    #[error("bringing up loopback in the network namespace: {0}")]
    Loopback(Errno),
    #[error("setting {path} in the network namespace: {source}")]
    Sysctl { path: String, source: std::io::Error },
    #[error("opening the network namespace {path}: {errno}")]
    Open { path: String, errno: Errno },
    #[error("starting the thread that makes the network namespace: {0} (is the host out of processes?)")]
    Thread(std::io::Error),
}

/// Whether this process runs in a mount namespace other than its
/// parent's: systemd (PID 1, the parent of a service) gives a unit one of
/// its own for ProtectSystem=, PrivateTmp=, ProtectKernelModules= and the
/// like. The bind mounts that keep the namespaces then live in that
/// namespace alone and die with this process, and a successor finds empty
/// files. False when either cannot be read.
pub fn mounts_die_with_us() -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    let parent = format!("/proc/{}/ns/mnt", nix::unistd::getppid());
    matches!((id("/proc/self/ns/mnt"), id(&parent)), (Some(ours), Some(theirs)) if ours != theirs)
}

/// Makes a network namespace, with loopback up, kept at `path` (a file
/// that must not exist) until `remove`.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    let shown = || path.display().to_string();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| NetnsError::MountPoint { path: shown(), source })?;
    let owned = path.to_owned();
    // On a thread of its own: unshare(CLONE_NEWNET) moves only the calling
    // thread, which ends here, so no other code ever runs in the namespace.
    let made = std::thread::Builder::new().spawn(move || -> Result<(), NetnsError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
        mount(Some("/proc/thread-self/ns/net"), &owned, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|errno| NetnsError::Bind { path: owned.display().to_string(), errno })?;
        super::sys::loopback_up().map_err(NetnsError::Loopback)?;
        // As Docker does: the namespace is the workload's alone, so its
        // ports below 1024 and ICMP echo sockets need no privilege there
        // (its root has none in the host's user namespace, which owns it).
        for (sysctl, value) in [("ip_unprivileged_port_start", "0"), ("ping_group_range", "0 2147483647")] {
            let path = format!("/proc/sys/net/ipv4/{sysctl}");
            std::fs::write(&path, value).map_err(|source| NetnsError::Sysctl { path, source })?;
        }
        Ok(())
    });
    let made = match made {
        Ok(thread) => thread.join().unwrap_or(Err(NetnsError::Unshare(Errno::EIO))),
        Err(e) => Err(NetnsError::Thread(e)),
    };
    if made.is_err() {
        remove(path);
    }
    made
}

/// Lets the namespace at `path` go (it ends once no process is in it) and
/// removes its mount point. Nothing there is fine.
pub fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Whether `path` is a mount point left behind by a namespace mount that
/// went (with the mount namespace it was made in, a daemon's own that
/// died): a file on its directory's own filesystem. A mount of a
/// namespace is on nsfs. What cannot be looked at is not said to be.
pub fn is_left_behind(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(file), Some(Ok(dir))) = (std::fs::symlink_metadata(path), path.parent().map(std::fs::metadata)) else {
        return false;
    };
    file.is_file() && file.dev() == dir.dev()
}

/// Whether `path` holds a network namespace (a bind mount of one).
pub fn exists(path: &Path) -> bool {
    open_ns(path).is_ok_and(|fd| {
        // SAFETY: ioctl NS_GET_NSTYPE on a descriptor we own; no memory is passed.
        let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), NS_GET_NSTYPE) };
        kind == libc::CLONE_NEWNET
    })
}

/// `NS_GET_NSTYPE`, _IO(0xb7, 0x3).
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Opens the namespace at `path`, to join it.
pub fn open_ns(path: &Path) -> Result<OwnedFd, NetnsError> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| NetnsError::Open { path: path.display().to_string(), errno })
}

/// While it lives, the calling thread is in another network namespace (a
/// process it clones starts there); dropped, the thread is back in its own.
pub struct Entered {
    home: OwnedFd,
}

impl Entered {
    pub fn enter(netns: BorrowedFd<'_>) -> Result<Self, Errno> {
        let home = open("/proc/thread-self/ns/net", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        setns(netns, CloneFlags::CLONE_NEWNET)?;
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET).is_err() {
            // A daemon thread left in a workload's namespace would open its
            // sockets there: better no daemon (systemd restarts it, and the
            // workloads run on to be adopted).
            eprintln!("paddock: cannot return to the daemon's network namespace; aborting");
            std::process::abort();
        }
    }
}
