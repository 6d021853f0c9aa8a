//! What the host mounts beneath `/sys` (its cgroup tree, securityfs,
//! debugfs, bpf), which a sandbox given the host's `/sys` must not see
//! (`rootfs::build` covers each). Found in `/proc/self/mountinfo` by the
//! process that starts sandboxes, once, and again only when its mount
//! table changed (the kernel flags a mountinfo descriptor so for `poll`):
//! on a host with many mounts (a network namespace kept mounted per
//! networked workload), reading mountinfo at every start costs more
//! than the rest of the start's mounts.

use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The kernel's own filesystems, as mountinfo names them: a host's mount
/// of one shows a workload the host's processes, network namespace and
/// kernel settings whatever its namespaces are.
pub const KERNEL_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "efivarfs",
    "pstore",
    "binfmt_misc",
    "fusectl",
    "selinuxfs",
];

/// This process's mount table as last read, under a lock.
fn watched<T>(f: impl FnOnce(&Watched) -> T) -> std::io::Result<T> {
    static WATCHED: Mutex<Option<Watched>> = Mutex::new(None);
    let mut watched = WATCHED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if watched.is_none() {
        *watched = Some(Watched::open(Path::new(MOUNTINFO), b"/sys")?);
    }
    let current = watched.as_mut().expect("opened just above").current();
    match current {
        Ok(()) => Ok(f(watched.as_ref().expect("opened just above"))),
        Err(e) => {
            *watched = None;
            Err(e)
        }
    }
}

/// The outermost mounts beneath /sys, relative to it, as bytes (a mount
/// point's path need not be UTF-8); None when mountinfo cannot be read
/// (the init then reads its own).
pub fn beneath_sys() -> Option<Vec<Vec<u8>>> {
    watched(|w| w.beneath.clone()).ok()
}

/// A kernel filesystem (`KERNEL_FILESYSTEMS`) mounted strictly below
/// `at` (what a recursive copy of `at` takes along): its mount point and
/// type.
pub fn kernel_filesystem_below(at: &Path) -> std::io::Result<Option<(PathBuf, String)>> {
    watched(|w| w.kernel.iter().find(|(point, _)| point != at && point.starts_with(at)).cloned())
}

/// A mountinfo descriptor and what it last said: the mounts beneath
/// `top`, and every kernel filesystem's.
struct Watched {
    file: std::fs::File,
    top: Vec<u8>,
    beneath: Vec<Vec<u8>>,
    kernel: Vec<(PathBuf, String)>,
}

impl Watched {
    fn open(mountinfo: &Path, top: &[u8]) -> std::io::Result<Self> {
        let file = std::fs::File::open(mountinfo)?;
        let mut watched = Watched { file, top: top.to_vec(), beneath: Vec::new(), kernel: Vec::new() };
        watched.read()?;
        Ok(watched)
    }

    fn read(&mut self) -> std::io::Result<()> {
        let mut text = Vec::new();
        self.file.rewind()?;
        self.file.read_to_end(&mut text)?;
        self.beneath =
            mounted_beneath(&text, &self.top).into_iter().map(|p| p.into_os_string().into_encoded_bytes()).collect();
        self.kernel = kernel_mounts(&text);
        Ok(())
    }

    /// Reads the table again if it changed since (the poll that says so
    /// also clears the mark).
    fn current(&mut self) -> std::io::Result<()> {
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLPRI)];
        let changed = match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) => fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
            Err(_) => true,
        };
        if changed {
            self.read()?;
        }
        Ok(())
    }
}

/// The kernel filesystems in `mountinfo`: each mount point, and its type.
fn kernel_mounts(mountinfo: &[u8]) -> Vec<(PathBuf, String)> {
    mountinfo
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let separator = line.windows(3).position(|w| w == b" - ")?;
            let fstype = line[separator + 3..].split(|b| *b == b' ').next()?;
            let fstype = std::str::from_utf8(fstype).ok().filter(|t| KERNEL_FILESYSTEMS.contains(t))?;
            let point = line[..separator].split(|b| *b == b' ').nth(4).map(unescape_octal)?;
            Some((PathBuf::from(std::ffi::OsString::from_vec(point)), fstype.to_owned()))
        })
        .collect()
}

/// The mount points in `mountinfo` (`/proc/self/mountinfo`'s bytes)
/// beneath `top`, relative to it, outermost only (what lies beneath one of
/// them goes with it), in mountinfo's order.
pub(super) fn mounted_beneath(mountinfo: &[u8], top: &[u8]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for line in mountinfo.split(|b| *b == b'\n') {
        let Some(point) = line.split(|b| *b == b' ').nth(4).map(unescape_octal) else { continue };
        let Some(rest) = point.strip_prefix(top).and_then(|r| r.strip_prefix(b"/")) else { continue };
        let rest = Path::new(std::ffi::OsStr::from_bytes(rest)).to_path_buf();
        if rest.as_os_str().is_empty() || found.iter().any(|f| rest.starts_with(f)) {
            continue;
        }
        found.retain(|f| !f.starts_with(&rest));
        found.push(rest);
    }
    found
}

/// mountinfo's escapes undone: the kernel writes a space, a tab, a
/// newline and a backslash in a path as `\040`, `\011`, `\012`, `\134`.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let digits = field.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (field[i], digits) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mounts_beneath_sys_are_its_outermost_ones_unescaped() {
        let mountinfo = b"\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
23 22 0:22 / /sys/fs/cgroup ro - tmpfs tmpfs ro
24 23 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
25 22 0:7 / /sys/kernel/debug rw - debugfs debugfs rw
26 25 0:12 / /sys/kernel/debug/tracing rw - tracefs tracefs rw
27 1 0:5 / /system rw - tmpfs tmpfs rw
28 22 0:30 / /sys/fs/odd\\040name rw - tmpfs tmpfs rw
29 22 0:31 / /sys/fs/caf\xe9 rw - tmpfs tmpfs rw
30 1 0:31 / /sys rw - sysfs sysfs rw
31 22 0:32 / /sys/kernel rw - tmpfs tmpfs rw
";
        let latin1 = PathBuf::from(std::ffi::OsStr::from_bytes(b"fs/caf\xe9"));
        assert_eq!(
            mounted_beneath(mountinfo, b"/sys"),
            [PathBuf::from("fs/cgroup"), PathBuf::from("fs/odd name"), latin1, PathBuf::from("kernel")]
        );
        assert_eq!(mounted_beneath(b"short line\n\n", b"/sys"), Vec::<PathBuf>::new());
        let kernel: Vec<(String, String)> =
            kernel_mounts(mountinfo).into_iter().map(|(p, t)| (p.display().to_string(), t)).collect();
        let named = |p: &str, t: &str| (p.to_owned(), t.to_owned());
        assert_eq!(
            kernel,
            [
                named("/sys", "sysfs"),
                named("/sys/fs/cgroup/memory", "cgroup"),
                named("/sys/kernel/debug", "debugfs"),
                named("/sys/kernel/debug/tracing", "tracefs"),
                named("/sys", "sysfs"),
            ]
        );
        assert_eq!(unescape_octal(b"a\\134b\\011\\8"), b"a\\b\t\\8");
    }

    /// Read once, and again only after the mount table changed.
    #[test]
    fn the_list_follows_the_mount_table() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().as_os_str().as_bytes().to_vec();
        let mut watched = Watched::open(Path::new(MOUNTINFO), &top).unwrap();
        let mut current = || watched.current().map(|()| watched.beneath.clone()).ok();
        assert_eq!(current(), Some(Vec::new()));
        std::fs::create_dir(dir.path().join("x")).unwrap();
        let x = dir.path().join("x");
        nix::mount::mount(Some("tmpfs"), &x, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
            .expect("mount a tmpfs (this test needs root)");
        let seen = current();
        nix::mount::umount(&x).unwrap();
        assert_eq!(seen, Some(vec![b"x".to_vec()]));
        assert_eq!(current(), Some(Vec::new()), "read again once it is gone");
    }
}
