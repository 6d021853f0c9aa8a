//! The host paths a sandbox is built from, each resolved exactly once.
//!
//! paddock, as the host's root, opens the rootfs and every mount source
//! into a descriptor and makes the sandbox's detached copy (open_tree)
//! from that descriptor, never from the path again: a symlink swapped in
//! between a check and a use (a loop of `renameat2(RENAME_EXCHANGE)` run
//! by a host user or by another workload) cannot change what the sandbox
//! gets. An idmapped source under `volumes_root` is resolved beneath
//! volumes_root's own descriptor without following any symlink
//! (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), because an idmapped
//! mount gives the workload's root the power of the files' real owners.
//! Every mount is made `nosuid` and `nodev` unless the manifest says
//! otherwise (policy-gated keys), and read-only when asked, here, before
//! the sandbox ever sees it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, openat2};

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
    #[error(transparent)]
    VolumesRoot(#[from] UnsafeInput),
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

/// Resolves a host path once (following the operator's symlinks, but no
/// magic link of /proc) into an O_PATH descriptor.
fn open_host(path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(AT_FDCWD, path, how)
}

/// Resolves `relative` beneath `root`, refusing every symlink and `..`
/// that would leave it.
fn open_beneath(root: &OwnedFd, relative: &Path) -> Result<OwnedFd, Errno> {
    let relative = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(root, relative, how)
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

/// Opens every source of `manifest` once and detaches its copy.
pub fn prepare(manifest: &Manifest, volumes_root: &Path) -> Result<Sources, SourceError> {
    let path = &manifest.rootfs.path;
    let rootfs = open_host(path)
        .and_then(|fd| sys::open_tree_clone(Some(fd.as_fd()), c"", false))
        .map_err(|errno| SourceError::Rootfs { path: path.clone(), errno })?;
    // Opened (and checked) once per start, and only when a volume needs it.
    let mut volumes: Option<OwnedFd> = None;
    let mut mounts = Vec::with_capacity(manifest.mounts.len());
    for mount in &manifest.mounts {
        let source = &mount.source;
        let err = |errno| SourceError::Mount { path: source.clone(), errno };
        let fd = match (mount.idmap && source.starts_with(volumes_root)).then(|| below(source, volumes_root)) {
            Some(None) => {
                return Err(SourceError::IdmapOutside {
                    path: source.clone(),
                    root: volumes_root.to_owned(),
                    errno: Errno::EXDEV,
                });
            }
            Some(Some(relative)) => {
                let root = match &volumes {
                    Some(root) => root,
                    None => volumes.insert(crate::fsutil::open_volumes_root(volumes_root)?),
                };
                open_beneath(root, relative).map_err(|errno| SourceError::IdmapOutside {
                    path: source.clone(),
                    root: volumes_root.to_owned(),
                    errno,
                })?
            }
            None => open_host(source).map_err(err)?,
        };
        let is_dir = is_dir(&fd).map_err(err)?;
        let tree = sys::open_tree_clone(Some(fd.as_fd()), c"", true).map_err(err)?;
        sys::mount_setattr(tree.as_fd(), attributes(mount), None, true).map_err(err)?;
        mounts.push(Source { tree, is_dir });
    }
    Ok(Sources { rootfs, mounts })
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
