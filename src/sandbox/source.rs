//! The host paths a sandbox is built from, each resolved exactly once.
//!
//! paddock, as the host's root, opens the rootfs and every mount source
//! into a descriptor and makes the sandbox's detached copy (open_tree)
//! from that descriptor, never from the path again: a symlink swapped in
//! between a check and a use (a loop of `renameat2(RENAME_EXCHANGE)` run
//! by a host user or by another workload) cannot change what the sandbox
//! gets. A source under `volumes_root` is resolved beneath volumes_root's
//! own descriptor without following any symlink (`openat2(RESOLVE_BENEATH
//! | RESOLVE_NO_SYMLINKS)`), because an idmapped mount gives the
//! workload's root the power of the files' real owners, host root
//! included: a link there may be a workload's whoever owns it. Any other
//! path is walked one component at a time, and a symlink is followed only
//! where no one but root could have made it (`open_host`).
//! Every mount is made `nosuid` and `nodev` unless the manifest says
//! otherwise (policy-gated keys), and read-only when asked, here, before
//! the sandbox ever sees it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::sys;
use crate::fsutil::UnsafeInput;
use crate::model::{Manifest, Mount};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("rootfs {path}: {errno}")]
    Rootfs { path: PathBuf, errno: Errno },
    #[error("mount source {path}: {errno}")]
    Mount { path: PathBuf, errno: Errno },
    #[error(
        "idmapped mount source {path} must lie under volumes_root {root} and be reached without a symlink or `..` ({errno}); move the data there or remove the symlink"
    )]
    IdmapOutside { path: PathBuf, root: PathBuf, errno: Errno },
    #[error(
        "{path} lies under volumes_root {root}, where paddock follows no symlink or `..` (a workload with an idmapped volume writes there as the host's root, so a link there may be a workload's, whoever owns it): name the path it leads to"
    )]
    VolumeSymlink { path: PathBuf, root: PathBuf },
    #[error(
        "{path}: {link} is a symlink that someone other than root could have made (it, or the directory that holds it, is not root's alone), and paddock does not follow such a link as root: name the path it leads to, or make the link and its directory root's and writable only by root"
    )]
    UnsafeSymlink { path: PathBuf, link: PathBuf },
    #[error(
        "{path} is volumes_root {root} itself: a workload may be given a volume under it, never all of them at once; name the volume's own directory"
    )]
    VolumesRootItself { path: PathBuf, root: PathBuf },
    #[error(
        "rootfs {path} is the host's root directory, reached through a link, and writable: the policies read a rootfs as written, so write it as \"/\" (and keep readonly = true, as baseline requires), or name a root directory of the workload's own"
    )]
    WritableHostRoot { path: PathBuf },
    #[error(
        "mount source {path} is the host's root directory, reached through a link, and writable: the policies read a mount source as written, and it would give the workload the host's world-writable directories; mount only the directory the workload needs"
    )]
    WritableHostRootMount { path: PathBuf },
    #[error(
        "mount source {path} lies below {dir}, a directory others may not enter (mode {mode:04o}): the host keeps what is there from every user but root, and a mount would give it to the workload (a file others may read there, such as a 0644 manifest in a 0700 directory); move the data under volumes_root ({volumes_root}) or to a directory others may enter"
    )]
    Unenterable { path: PathBuf, dir: PathBuf, mode: u32, volumes_root: PathBuf },
    #[error(
        "rootfs {path} is on the host's {fstype} filesystem, a kernel interface and no root directory: name a root directory of the workload's own"
    )]
    KernelFilesystemRoot { path: PathBuf, fstype: String },
    #[error(
        "mount source {path} {}: it shows the workload the host's processes, network and kernel settings, as a host pid namespace would; mount only the directories the workload needs, or, for an agent that must see the host, set kernel_filesystems = true on the mount under a policy that allows it (baseline does not)",
        kernel_place(.fstype, .below.as_deref())
    )]
    KernelFilesystem { path: PathBuf, fstype: String, below: Option<PathBuf> },
    #[error("mount source {path}: cannot read {file}, which says what is mounted below it: {errno}")]
    MountTable { path: PathBuf, file: PathBuf, errno: Errno },
    #[error(transparent)]
    VolumesRoot(#[from] UnsafeInput),
}

/// Where a kernel filesystem is, for `SourceError::KernelFilesystem`: the
/// source itself is on it, or it is mounted below the source.
fn kernel_place(fstype: &str, below: Option<&Path>) -> String {
    match below {
        None => format!("is on the host's {fstype} filesystem"),
        Some(at) => format!("holds the host's {fstype} filesystem at {}", at.display()),
    }
}

impl SourceError {
    /// The errno a host path failed with, if it failed with one (not a
    /// refusal of paddock's own): an exhausted daemon is told from a
    /// missing path by it (`is_exhausted`).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SourceError::Rootfs { errno, .. }
            | SourceError::Mount { errno, .. }
            | SourceError::IdmapOutside { errno, .. }
            | SourceError::MountTable { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A mount source's detached copy, with its attributes already set.
#[derive(Debug)]
pub struct Source {
    pub tree: OwnedFd,
    /// Whether it is a directory (else the mount point is a file), from the
    /// descriptor itself.
    pub is_dir: bool,
}

/// The rootfs and each mount's source, as detached mounts.
#[derive(Debug)]
pub struct Sources {
    pub rootfs: OwnedFd,
    pub mounts: Vec<Source>,
}

/// Why a host path was not opened.
#[derive(Debug)]
enum HostPathError {
    Errno(Errno),
    /// A symlink only root could not have made: the link's path.
    UnsafeSymlink(PathBuf),
    /// The path reached volumes_root by another name: what is left of it,
    /// to be resolved beneath volumes_root as a path spelled under it is.
    ReachesVolumes(PathBuf),
    /// It goes through a directory others may not enter: the directory,
    /// and its mode.
    Unenterable(PathBuf, u32),
}

impl From<Errno> for HostPathError {
    fn from(errno: Errno) -> Self {
        HostPathError::Errno(errno)
    }
}

/// The most symlinks one path may go through (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Resolves a host path once, as the host's root, into an O_PATH
/// descriptor: component by component, following a symlink only where no
/// one but root could have made it (the link root's, in a directory that
/// is root's and writable by no one else, as an operator's own links are:
/// `/lib` on a merged-/usr system, `/var/run`). A symlink a workload or a
/// user could have made (in a volume that another mount gives a workload
/// to write, under /tmp) is refused: followed as root, it would mount
/// whatever it names. A link is followed by its text, so no magic link of
/// /proc is.
///
/// `volumes` is volumes_root's identity (device, inode): a path that
/// reaches it by another name (a link to it, say) goes on beneath it as a
/// path spelled under it does (`open_beneath`).
///
/// With `enterable`, every directory it goes through must be one others
/// may enter (search): a mount gives a workload what lies below it
/// without the walk from `/` that the host's permissions guard, so a file
/// others may read in a directory they may not enter (a 0644 manifest in
/// the 0700 workloads directory) would be the workload's to read.
fn open_host(path: &Path, volumes: Option<(u64, u64)>, enterable: bool) -> Result<OwnedFd, HostPathError> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    let root = || nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty());
    let parts = |path: &Path| -> VecDeque<OsString> {
        path.components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_owned()),
                Component::ParentDir => Some("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
            })
            .collect()
    };
    if !path.is_absolute() {
        return Err(Errno::EINVAL.into());
    }
    let (mut dir, mut at, mut todo, mut links) = (root()?, PathBuf::from("/"), parts(path), 0);
    // Looked at once it is known that the walk goes on through it (not
    // when it reaches volumes_root, whose own checks then apply).
    let must_enter = |dir: &OwnedFd, at: &Path| -> Result<(), HostPathError> {
        let mode = nix::sys::stat::fstat(dir)?.st_mode;
        if enterable && mode & 0o001 == 0 {
            return Err(HostPathError::Unenterable(at.to_owned(), mode & 0o7777));
        }
        Ok(())
    };
    while let Some(name) = todo.pop_front() {
        let fd = nix::fcntl::openat(
            &dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let stat = nix::sys::stat::fstat(&fd)?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFLNK {
            if volumes == Some((stat.st_dev, stat.st_ino)) {
                return Err(HostPathError::ReachesVolumes(todo.iter().collect()));
            }
            must_enter(&dir, &at)?;
            if name == ".." {
                at.pop();
            } else {
                at.push(&name);
            }
            dir = fd;
            continue;
        }
        must_enter(&dir, &at)?;
        // In a directory others may write (sticky or not: where hard links
        // to others' files are allowed, a root's link can be linked into
        // /tmp), anyone could have put it.
        let holder = nix::sys::stat::fstat(&dir)?;
        let others_may_replace = crate::fsutil::writers(holder.st_mode).is_some();
        if stat.st_uid != 0 || holder.st_uid != 0 || others_may_replace {
            return Err(HostPathError::UnsafeSymlink(at.join(&name)));
        }
        // /proc's links (`/proc/self/root`, `/proc/1/cwd`) are not what
        // their text says: refused, as RESOLVE_NO_MAGICLINKS would.
        if nix::sys::statfs::fstatfs(&dir)?.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC {
            return Err(Errno::ELOOP.into());
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(Errno::ELOOP.into());
        }
        let target = PathBuf::from(nix::fcntl::readlinkat(&fd, "")?);
        if target.is_absolute() {
            (dir, at) = (root()?, PathBuf::from("/"));
        }
        let mut rest = parts(&target);
        rest.extend(todo);
        todo = rest;
    }
    Ok(dir)
}

/// Resolves `relative` beneath `root`, refusing every symlink and `..`
/// that would leave it (a `..` that stays beneath, from the text of a
/// root's link that led here, is walked).
fn open_beneath(root: &OwnedFd, relative: &Path) -> Result<OwnedFd, Errno> {
    let relative = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    sys::openat2_retrying(root, relative, how)
}

/// Whether `path` is written as the host's root (`/` and its spellings,
/// such as `//` or `/.`), as the policies' patterns read it.
fn spells_root(path: &Path) -> bool {
    path.as_os_str().as_bytes().iter().all(|b| matches!(b, b'/' | b'.'))
}

/// Whether `fd` is the host's root directory, whatever path led to it (a
/// link to `/` of an operator's, say).
fn is_host_root(fd: &OwnedFd) -> Result<bool, Errno> {
    let (it, root) = (nix::sys::stat::fstat(fd)?, nix::sys::stat::stat("/")?);
    Ok((it.st_dev, it.st_ino) == (root.st_dev, root.st_ino))
}

fn is_dir(fd: &OwnedFd) -> Result<bool, Errno> {
    Ok(nix::sys::stat::fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// The attributes a mount gets before the sandbox sees it. (An idmapping
/// needs the sandbox's user namespace, so it is set later.)
fn attributes(mount: &Mount) -> u64 {
    let mut attrs = 0;
    if mount.readonly {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    if !mount.setuid {
        attrs |= sys::MOUNT_ATTR_NOSUID;
    }
    if !mount.devices {
        attrs |= sys::MOUNT_ATTR_NODEV;
    }
    attrs
}

/// The path below `root` when `path` is under it (by components, as the
/// policies' prefix rule reads it).
fn below<'a>(path: &'a Path, root: &Path) -> Option<&'a Path> {
    let rel = path.strip_prefix(root).ok()?;
    rel.components().all(|c| matches!(c, Component::Normal(_))).then_some(rel)
}

/// What is left of `path` once it reaches volumes_root (`relative`),
/// resolved beneath it after volumes_root's own checks: no link, and no
/// `..` out of it.
fn beneath_volumes(
    path: &Path,
    relative: &Path,
    idmap: bool,
    volumes_root: &Path,
    volumes: &mut Option<OwnedFd>,
    errno_error: &dyn Fn(Errno) -> SourceError,
) -> Result<OwnedFd, SourceError> {
    let (path, root_path) = (path.to_owned(), volumes_root.to_owned());
    if relative.as_os_str().is_empty() {
        return Err(SourceError::VolumesRootItself { path, root: root_path });
    }
    if volumes.is_none() {
        *volumes = Some(crate::fsutil::open_volumes_root(volumes_root)?);
    }
    let root = volumes.as_ref().expect("opened just above");
    open_beneath(root, relative).map_err(|errno| match errno {
        _ if idmap => SourceError::IdmapOutside { path, root: root_path, errno },
        Errno::ELOOP | Errno::EXDEV => SourceError::VolumeSymlink { path, root: root_path },
        errno => errno_error(errno),
    })
}

/// Resolves a rootfs or mount source once. Under volumes_root (as spelled,
/// or reached by another name), idmapped or not: a workload with an
/// idmapped volume writes there as the host's root, so even a link of
/// root's there may be a workload's, and nothing there is followed.
/// Elsewhere, `open_host`.
fn resolve(
    path: &Path,
    idmap: bool,
    enterable: bool,
    volumes_root: &Path,
    identity: Option<(u64, u64)>,
    volumes: &mut Option<OwnedFd>,
    errno_error: &dyn Fn(Errno) -> SourceError,
) -> Result<OwnedFd, SourceError> {
    let beneath = |relative: &Path, volumes: &mut Option<OwnedFd>| {
        beneath_volumes(path, relative, idmap, volumes_root, volumes, errno_error)
    };
    match path.starts_with(volumes_root).then(|| below(path, volumes_root)) {
        Some(None) if idmap => {
            Err(SourceError::IdmapOutside { path: path.to_owned(), root: volumes_root.to_owned(), errno: Errno::EXDEV })
        }
        Some(None) => Err(SourceError::VolumeSymlink { path: path.to_owned(), root: volumes_root.to_owned() }),
        Some(Some(relative)) => beneath(relative, volumes),
        None => match open_host(path, identity, enterable) {
            Ok(fd) => Ok(fd),
            Err(HostPathError::ReachesVolumes(rest)) => beneath(&rest, volumes),
            Err(HostPathError::Errno(errno)) => Err(errno_error(errno)),
            Err(HostPathError::UnsafeSymlink(link)) => Err(SourceError::UnsafeSymlink { path: path.to_owned(), link }),
            Err(HostPathError::Unenterable(dir, mode)) => Err(SourceError::Unenterable {
                path: path.to_owned(),
                dir,
                mode,
                volumes_root: volumes_root.to_owned(),
            }),
        },
    }
}

/// Why `open_trusted` did not open a file.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "{path} is reached through {link}, a symlink that someone other than root could have made (it, or the directory that holds it, is not root's alone): whoever made it chooses what paddock runs; make the link and its directory root's and writable only by root, or link to the file directly"
    )]
    Symlink { path: PathBuf, link: PathBuf },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Opens the host file at `path` for reading, resolved as mount sources
/// are (`open_host`: a symlink is followed only where no one but root
/// could have made it), non-blocking (a FIFO cannot hang the reader).
/// For what paddock trusts as root's: the daemon's manifests. With the
/// file, the path it was found at (what was opened, for messages).
pub fn open_trusted(path: &Path) -> Result<(std::fs::File, PathBuf), Untrusted> {
    let fd = match open_host(&std::path::absolute(path)?, None, false) {
        Ok(fd) => fd,
        Err(HostPathError::UnsafeSymlink(link)) => return Err(Untrusted::Symlink { path: path.to_owned(), link }),
        Err(HostPathError::Errno(errno)) => return Err(std::io::Error::from(errno).into()),
        Err(HostPathError::ReachesVolumes(_) | HostPathError::Unenterable(..)) => {
            return Err(std::io::Error::from(Errno::EXDEV).into());
        }
    };
    let found = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))?;
    // The O_PATH descriptor opened for reading, if a regular file.
    Ok((crate::fsutil::reopen_if_regular(std::fs::File::from(fd))?, found))
}

/// The kernel's own filesystems by their magic numbers (statfs(2)), for
/// what a descriptor is on.
const KERNEL_MAGIC: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstore"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6573_5543, "fusectl"),
    (0xf97c_ff8c, "selinuxfs"),
];

/// The kernel filesystem `fd` is on, if it is on one.
fn kernel_filesystem_of(fd: &OwnedFd) -> Result<Option<&'static str>, Errno> {
    let magic = nix::sys::statfs::fstatfs(fd)?.filesystem_type().0 as i64;
    Ok(KERNEL_MAGIC.iter().find(|(m, _)| *m == magic).map(|(_, name)| *name))
}

/// Opens every source of `manifest` once and detaches its copy. `own` are
/// files paddock made for the sandbox (its network's /etc/hosts and
/// /etc/resolv.conf), which need not be where others may enter.
pub fn prepare(manifest: &Manifest, volumes_root: &Path, own: &[PathBuf]) -> Result<Sources, SourceError> {
    let path = &manifest.rootfs.path;
    // volumes_root by what it is, for a path that reaches it by another name.
    let identity = nix::sys::stat::stat(volumes_root).ok().map(|st| (st.st_dev, st.st_ino));
    // Opened (and checked) once per start, and only when a path under it needs it.
    let mut volumes: Option<OwnedFd> = None;
    let rootfs_err = |errno| SourceError::Rootfs { path: path.clone(), errno };
    // A root directory is its workload's, whatever holds it (machines'
    // trees live in /var/lib/machines, 0700): no walk from `/` to guard.
    let rootfs = resolve(path, false, false, volumes_root, identity, &mut volumes, &rootfs_err)?;
    // The policies read a rootfs path as written (`/` and its spellings):
    // a writable host root reached by another path would pass them unseen.
    if !manifest.rootfs.readonly && !spells_root(path) && is_host_root(&rootfs).map_err(rootfs_err)? {
        return Err(SourceError::WritableHostRoot { path: path.clone() });
    }
    // Copied alone (no mount below it comes along), so only its own.
    if let Some(fstype) = kernel_filesystem_of(&rootfs).map_err(rootfs_err)? {
        return Err(SourceError::KernelFilesystemRoot { path: path.clone(), fstype: fstype.to_owned() });
    }
    let rootfs = sys::open_tree_clone(Some(rootfs.as_fd()), c"", false).map_err(rootfs_err)?;
    let mut looked = Looked { identity, volumes };
    let mut mounts = Vec::with_capacity(manifest.mounts.len());
    for mount in &manifest.mounts {
        let err = |errno| SourceError::Mount { path: mount.source.clone(), errno };
        // paddock's own files (a network's /etc/hosts, in a directory only
        // root may enter) are given as they are.
        let fd = open_source(mount, volumes_root, !own.contains(&mount.source), &mut looked)?;
        let is_dir = is_dir(&fd).map_err(err)?;
        let tree = sys::open_tree_clone(Some(fd.as_fd()), c"", true).map_err(err)?;
        sys::mount_setattr(tree.as_fd(), attributes(mount), None, true).map_err(err)?;
        mounts.push(Source { tree, is_dir });
    }
    Ok(Sources { rootfs, mounts })
}

/// What one start looks at once, for all its mounts.
struct Looked {
    /// volumes_root by what it is, for a path that reaches it by another name.
    identity: Option<(u64, u64)>,
    /// volumes_root, opened (and checked) only when a path under it needs it.
    volumes: Option<OwnedFd>,
}

/// Resolves a mount's source once and checks what the start refuses of
/// it: a writable host root by another name, a kernel filesystem the
/// manifest did not ask for, and (with `enterable`) a directory on the way
/// that others may not enter.
fn open_source(
    mount: &Mount,
    volumes_root: &Path,
    enterable: bool,
    looked: &mut Looked,
) -> Result<OwnedFd, SourceError> {
    let source = &mount.source;
    let err = |errno| SourceError::Mount { path: source.clone(), errno };
    let fd = resolve(source, mount.idmap, enterable, volumes_root, looked.identity, &mut looked.volumes, &err)?;
    // As the rootfs's: the policies read a source as written.
    if !mount.readonly && !spells_root(source) && is_host_root(&fd).map_err(err)? {
        return Err(SourceError::WritableHostRootMount { path: source.clone() });
    }
    // Copied with every mount below it: a mount of `/` takes the host's
    // /proc and /sys along.
    if mount.kernel_filesystems {
        return Ok(fd);
    }
    if let Some(fstype) = kernel_filesystem_of(&fd).map_err(err)? {
        return Err(SourceError::KernelFilesystem { path: source.clone(), fstype: fstype.to_owned(), below: None });
    }
    let table = |e: std::io::Error| SourceError::MountTable {
        path: source.clone(),
        file: super::host_mounts::MOUNTINFO.into(),
        errno: super::rootfs::errno(e),
    };
    let at = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))).map_err(table)?;
    match super::host_mounts::kernel_filesystem_below(&at).map_err(table)? {
        Some((point, fstype)) => {
            Err(SourceError::KernelFilesystem { path: source.clone(), fstype, below: Some(point) })
        }
        None => Ok(fd),
    }
}

/// What a start would refuse of `mount`'s source on this host, told
/// without making anything: for `paddock check`, which warns of it.
pub fn check_mount(mount: &Mount, volumes_root: &Path) -> Result<(), SourceError> {
    let identity = nix::sys::stat::stat(volumes_root).ok().map(|st| (st.st_dev, st.st_ino));
    let mut looked = Looked { identity, volumes: None };
    open_source(mount, volumes_root, true, &mut looked).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_reads_paths_by_component() {
        let root = Path::new("/var/lib/paddock/volumes");
        assert_eq!(below(Path::new("/var/lib/paddock/volumes/db"), root), Some(Path::new("db")));
        assert_eq!(below(Path::new("/var/lib/paddock/volumes"), root), Some(Path::new("")));
        assert_eq!(below(Path::new("/var/lib/paddock/volumes-evil/db"), root), None);
        assert_eq!(below(Path::new("/var/lib/paddock/volumes/../x"), root), None);
    }
}
