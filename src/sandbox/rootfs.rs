//! Building the sandbox's root inside its mount namespace, as a linear
//! recipe. Runs in the init (root of the new user namespace), after
//! paddock has written the id maps. Every source arrives as a detached
//! mount created by paddock, so no host path is resolved in here with the
//! sandbox's credentials except /dev's device nodes and /sys.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{chdir, pivot_root, sethostname};

use super::config::InitConfig;
use super::sys;

/// A failed step: which one, on what, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{step} {target}: {errno}")]
pub struct StepError {
    pub step: &'static str,
    pub target: String,
    pub errno: Errno,
}

trait Step<T> {
    fn step(self, step: &'static str, target: impl AsRef<Path>) -> Result<T, StepError>;
}

impl<T> Step<T> for Result<T, Errno> {
    fn step(self, step: &'static str, target: impl AsRef<Path>) -> Result<T, StepError> {
        self.map_err(|errno| StepError { step, target: target.as_ref().display().to_string(), errno })
    }
}

/// Where the new root is assembled, in the sandbox's private mount
/// namespace: the rootfs is attached over `/tmp` (or a staging tmpfs
/// holding an overlay's layers is); the host's `/tmp` is untouched.
const STAGING: &str = "/tmp";

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What runc's default spec masks in `/proc` (and `/sys/firmware`, below):
/// the host kernel's own information, which no workload needs and some
/// leak (the keys the daemon's session keyring lets it view, ACPI and SCSI
/// tables, timers). A file is covered by `/dev/null`, a directory by an
/// empty read-only tmpfs; what this kernel does not have is skipped. Not
/// for a privileged workload (`InitConfig::mask_paths`), nor in the host's
/// /proc of a remapped sandbox in the host's pid namespace (it sees the
/// host's processes anyway, and its root reads none of these). Before the
/// manifest's mounts: one of its own over these paths is what the
/// operator asked for, and shows them.
const MASKED_PROC: &[&str] =
    &["acpi", "asound", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "scsi"];

/// What runc's default spec makes read-only in `/proc` (`readonly_proc`):
/// the kernel's knobs, which the host's root could otherwise turn.
const READONLY_PROC: &[&str] = &["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Builds the root and enters it. On return, `/` is the sandbox's root.
pub fn build(cfg: &InitConfig, rootfs: OwnedFd, mounts: Vec<OwnedFd>) -> Result<(), StepError> {
    // Nothing we mount may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .step("make / private", "/")?;
    // A read-only root whose rootfs already has every mount point is the
    // rootfs's own mount, made read-only; otherwise it is an overlay, so
    // that the missing ones can be made without writing to the host.
    let overlay = cfg.rootfs_readonly && !has_every_mount_point(&rootfs, cfg);
    let root = if overlay { overlay_root(cfg, rootfs)? } else { attach_root(cfg, rootfs)? };
    let root_fd =
        open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).step("open root", &root)?;

    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let proc_dir = make_dir(&root_fd, &root, Path::new("/proc"))?;
    if cfg.private_pid {
        mount(Some("proc"), &proc_dir, Some("proc"), nosuid_nodev | MsFlags::MS_NOEXEC, None::<&str>)
            .step("mount proc", &proc_dir)?;
    } else {
        // A user namespace that does not own the pid namespace cannot mount proc.
        attach_host_tree("/proc", &proc_dir, false)?;
    }
    // In the host's /proc of a sandbox in the host's pid namespace, only
    // for one in the host's user namespace too (whose root is the host's):
    // a remapped one sees the host's processes anyway, and reads none of these.
    for name in MASKED_PROC.iter().filter(|_| cfg.mask_paths && (cfg.private_pid || cfg.readonly_proc)) {
        mask(&proc_dir.join(name))?;
    }
    for name in READONLY_PROC.iter().filter(|_| cfg.readonly_proc) {
        readonly(&proc_dir.join(name))?;
    }

    let dev = make_dir(&root_fd, &root, Path::new("/dev"))?;
    // nodev: a node made in it stays inert; the ones bound in are mounts
    // of their own, with the host's /dev's flags.
    let dev_flags =
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | if cfg.nodev { MsFlags::MS_NODEV } else { MsFlags::empty() };
    mount(Some("tmpfs"), &dev, Some("tmpfs"), dev_flags, Some("mode=0755,size=64k")).step("mount /dev", &dev)?;
    for name in DEVICES {
        let node = dev.join(name);
        std::fs::File::create(&node).map_err(errno).step("create", &node)?;
        let host = Path::new("/dev").join(name);
        mount(Some(&host), &node, None::<&str>, MsFlags::MS_BIND, None::<&str>).step("bind device", &host)?;
    }
    if cfg.host_devices {
        bind_host_devices(Path::new("/dev"), &dev, 0)?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(errno).step("mkdir", &pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .step("mount devpts", &pts)?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(errno).step("mkdir", &shm)?;
    mount(Some("shm"), &shm, Some("tmpfs"), nosuid_nodev | MsFlags::MS_NOEXEC, Some("mode=1777,size=65536k"))
        .step("mount /dev/shm", &shm)?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).map_err(errno).step("symlink", dev.join(link))?;
    }

    let tmp = make_dir(&root_fd, &root, Path::new("/tmp"))?;
    mount(Some("tmpfs"), &tmp, Some("tmpfs"), nosuid_nodev, Some("mode=1777")).step("mount /tmp", &tmp)?;

    let sys_dir = make_dir(&root_fd, &root, Path::new("/sys"))?;
    if cfg.own_network {
        let ro = nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
        mount(Some("sysfs"), &sys_dir, Some("sysfs"), ro, None::<&str>).step("mount sysfs", &sys_dir)?;
    } else {
        // sysfs can only be mounted by a user namespace that owns the
        // network namespace (as runc, the host's is bound read-only instead).
        attach_host_tree("/sys", &sys_dir, true)?;
    }
    // The host's firmware (EFI variables, DMI and ACPI tables), as runc masks it.
    if cfg.mask_paths {
        mask(&sys_dir.join("firmware"))?;
    }

    for (m, fd) in cfg.mounts.iter().zip(mounts) {
        let target =
            if m.is_dir { open_path(&make_dir(&root_fd, &root, &m.target)?)? } else { make_file(&root_fd, &m.target)? };
        sys::move_mount_onto(fd.as_fd(), target.as_fd()).step("attach mount", &m.target)?;
    }

    sethostname(&cfg.hostname).step("sethostname", &cfg.hostname)?;
    if cfg.own_network {
        sys::loopback_up().step("bring up", "lo")?;
    }

    if overlay {
        // A bind remount sets every per-mount flag anew: nodev is said again.
        let nodev = if cfg.nodev { MsFlags::MS_NODEV } else { MsFlags::empty() };
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nodev;
        mount(None::<&str>, &root, None::<&str>, flags, None::<&str>).step("make the rootfs read-only", &root)?;
    }

    // pivot_root(".", ".") stacks the old root on the new one; detaching it
    // leaves only the new root, with no path back to the host's.
    chdir(&root).step("chdir", &root)?;
    pivot_root(".", ".").step("pivot_root", &root)?;
    umount2(".", MntFlags::MNT_DETACH).step("detach the old root", "/")?;
    chdir("/").step("chdir", "/")
}

/// Where the init makes a mount of its own: a mount point beneath one of
/// them is resolved in that mount, never in the rootfs.
const OWN_MOUNTS: &[&str] = &["proc", "dev", "tmp", "sys"];

/// Whether the rootfs already holds every mount point the sandbox needs
/// (`/proc`, `/dev`, `/tmp`, `/sys` and each mount's target, a directory
/// or a regular file as its source is), each reached without a symlink.
/// Anything else (missing, a symlink anywhere on the way, the other type,
/// unreadable) answers no, and the overlay handles it as it always has.
/// So does a rootfs on a host mount that is `nosuid` or `noexec`: the
/// overlay, a mount of its own, never carried those flags, so the rootfs's
/// mount in its place would run less than it always has.
fn has_every_mount_point(rootfs: &OwnedFd, cfg: &InitConfig) -> bool {
    use nix::sys::statvfs::{FsFlags, fstatvfs};
    if fstatvfs(rootfs).map_or(true, |st| st.flags().intersects(FsFlags::ST_NOSUID | FsFlags::ST_NOEXEC)) {
        return false;
    }
    let own = OWN_MOUNTS.iter().map(|d| (PathBuf::from(d), true));
    let targets = cfg.mounts.iter().filter_map(|m| {
        let parts: PathBuf = m.target.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        // A target beneath /proc, /dev, /tmp or /sys is made in the init's
        // own mount there, not in the rootfs.
        let beneath_own = parts.components().count() > 1
            && parts.components().next().is_some_and(|c| OWN_MOUNTS.iter().any(|d| c.as_os_str() == *d));
        (!beneath_own).then_some((parts, m.is_dir))
    });
    own.chain(targets).all(|(relative, is_dir)| {
        if relative.as_os_str().is_empty() {
            return false;
        }
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let Ok(fd) = openat2(rootfs, relative.as_path(), how) else { return false };
        let want = if is_dir { libc::S_IFDIR } else { libc::S_IFREG };
        nix::sys::stat::fstat(&fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == want)
    })
}

/// The rootfs's own mount as the root, attached straight over the staging
/// directory: nothing is made beside it, so no staging tmpfs is needed. A
/// read-only one is made read-only here, before anything is resolved in
/// it, so nothing of the host's is written while the root is built; and
/// `nodev`, as devices already are on the overlay (a filesystem mounted in
/// a user namespace honours none): a device node in the rootfs stays inert.
fn attach_root(cfg: &InitConfig, rootfs: OwnedFd) -> Result<PathBuf, StepError> {
    let root = PathBuf::from(STAGING);
    let at = open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).step("open", &root)?;
    // Private already (`sys::open_tree_clone`): nothing the init mounts on
    // it propagates to the host, and pivot_root, which refuses a shared
    // mount, takes it.
    sys::move_mount_onto(rootfs.as_fd(), at.as_fd()).step("attach rootfs", &root)?;
    let attrs = match (cfg.rootfs_readonly, cfg.nodev) {
        (true, _) => sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NODEV,
        (false, true) => sys::MOUNT_ATTR_NODEV,
        (false, false) => 0,
    };
    if attrs != 0 {
        sys::mount_setattr(rootfs.as_fd(), attrs, None, false).step("set the rootfs's attributes", &root)?;
    }
    Ok(root)
}

/// A read-only root as an overlay: the rootfs below, a tmpfs upper layer
/// holding the mount points it lacks. Assembled in a staging tmpfs mounted
/// over `/tmp` in the sandbox's private mount namespace (the host's `/tmp`
/// is untouched); made read-only by the caller once the mounts are in.
fn overlay_root(cfg: &InitConfig, rootfs: OwnedFd) -> Result<PathBuf, StepError> {
    mount(Some("tmpfs"), STAGING, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0700"))
        .step("mount staging tmpfs", STAGING)?;
    let staging = Path::new(STAGING);
    let lower = staging.join("lower");
    std::fs::create_dir(&lower).map_err(errno).step("mkdir", &lower)?;
    sys::move_mount_onto(rootfs.as_fd(), open_path(&lower)?.as_fd()).step("attach rootfs", &lower)?;
    let (upper, work, merged) = (staging.join("upper"), staging.join("work"), staging.join("root"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).map_err(errno).step("mkdir", d)?;
    }
    for m in &cfg.mounts {
        prepare_upper(&lower, &upper, &m.target, m.is_dir)?;
    }
    let options =
        format!("lowerdir={},upperdir={},workdir={},userxattr", lower.display(), upper.display(), work.display());
    // nodev matters only outside a user namespace (`user = "host"`): a
    // filesystem mounted in one honours no device node anyway.
    let flags = if cfg.nodev { MsFlags::MS_NODEV } else { MsFlags::empty() };
    mount(Some("overlay"), &merged, Some("overlay"), flags, Some(options.as_str())).step("mount overlay", &merged)?;
    Ok(merged)
}

/// Makes a mount target in the overlay's upper layer, before the overlay
/// is mounted, when the rootfs lacks it: the sandbox's root cannot create
/// it later in a directory of the rootfs it does not own (`/etc` of a
/// root-owned rootfs), but a directory present in the upper layer is the
/// sandbox root's own. A file target that is a symlink in the rootfs
/// (`/etc/resolv.conf` often is) is hidden by the file made here; a
/// directory on the way that is a symlink is left alone (the walk that
/// follows refuses it, as it never follows symlinks).
fn prepare_upper(lower: &Path, upper: &Path, target: &Path, is_dir: bool) -> Result<(), StepError> {
    let parts: Vec<_> = target.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let Some((last, parents)) = parts.split_last() else { return Ok(()) };
    let (mut below, mut above) = (lower.to_path_buf(), upper.to_path_buf());
    for part in parents {
        below.push(part);
        above.push(part);
        match std::fs::symlink_metadata(&below) {
            Ok(meta) if meta.is_dir() => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => return Ok(()),
        }
        match std::fs::create_dir(&above) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(errno(e)).step("mkdir", &above),
        }
    }
    below.push(last);
    above.push(last);
    let present = std::fs::symlink_metadata(&below).ok();
    if is_dir {
        if present.is_none() {
            std::fs::create_dir(&above).or_else(exists_is_fine).map_err(errno).step("mkdir", &above)?;
        }
    } else if present.is_none_or(|m| m.file_type().is_symlink()) {
        std::fs::File::create(&above).map(drop).map_err(errno).step("create", &above)?;
    }
    Ok(())
}

fn exists_is_fine(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) }
}

/// What under the host's /dev a privileged workload is not given: each
/// sandbox has its own terminals (and `ptmx`, its devpts'), shared memory
/// and message queues.
const PRIVATE_IN_DEV: &[&str] = &["pts", "ptmx", "shm", "mqueue", "hugepages"];

/// A privileged workload's host devices (as Docker's `--privileged`): each
/// character and block device under the host's `host` (its /dev, and
/// three directories down, as /dev/bus/usb/001/002), bound at the same place
/// under `dev`; what the sandbox has already is kept. Symlinks are not
/// followed (a device is bound where it is).
fn bind_host_devices(host: &Path, dev: &Path, depth: usize) -> Result<(), StepError> {
    use std::os::unix::fs::FileTypeExt;
    let entries = match std::fs::read_dir(host) {
        // A directory gone since its parent was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        listed => listed.map_err(errno).step("read", host)?,
    };
    for entry in entries {
        let entry = entry.map_err(errno).step("read", host)?;
        let Ok(kind) = entry.file_type() else { continue };
        let (from, to) = (entry.path(), dev.join(entry.file_name()));
        if depth == 0 && PRIVATE_IN_DEV.contains(&&*entry.file_name().to_string_lossy()) {
            continue;
        }
        if kind.is_dir() && depth < 3 {
            match std::fs::create_dir(&to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(errno(e)).step("mkdir", &to),
            }
            bind_host_devices(&from, &to, depth + 1)?;
        } else if (kind.is_char_device() || kind.is_block_device()) && !to.exists() {
            std::fs::File::create(&to).map_err(errno).step("create", &to)?;
            match mount(Some(&from), &to, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
                // Gone since it was listed (a device unplugged): not there.
                Err(Errno::ENOENT | Errno::ENODEV) => drop(std::fs::remove_file(&to)),
                bound => bound.step("bind device", &from)?,
            }
        }
    }
    Ok(())
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn open_path(path: &Path) -> Result<OwnedFd, StepError> {
    open(path, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).step("open", path)
}

/// Covers `path` (see `MASKED_PROC`): a file with `/dev/null` (the
/// host's, as /dev's nodes are bound), a directory with an empty
/// read-only tmpfs. Nothing there is nothing to hide.
fn mask(path: &Path) -> Result<(), StepError> {
    let is_dir = match nix::sys::stat::lstat(path) {
        Ok(st) => SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e).step("mask", path),
    };
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if is_dir {
        mount(Some("tmpfs"), path, Some("tmpfs"), flags | MsFlags::MS_RDONLY, Some("size=0,mode=0555"))
    } else {
        mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    }
    .step("mask", path)
}

/// Makes `path` read-only where it is, with whatever is mounted below it
/// (the host's binfmt_misc under /proc/sys, say): a read-only copy of
/// the tree attached over itself. What this kernel does not have is skipped.
fn readonly(path: &Path) -> Result<(), StepError> {
    match nix::sys::stat::lstat(path) {
        Ok(_) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e).step("make read-only", path),
    }
    let source = path.to_str().ok_or(Errno::EINVAL).step("make read-only", path)?;
    attach_host_tree(source, path, true)
}

/// Clones a tree of the host's (visible in our mount namespace until the
/// pivot) onto `target`, read-only when asked, keeping its submounts.
fn attach_host_tree(source: &str, target: &Path, readonly: bool) -> Result<(), StepError> {
    let c = CString::new(source).map_err(|_| Errno::EINVAL).step("open_tree", source)?;
    let tree = sys::open_tree_clone(None, &c, true).step("open_tree", source)?;
    if readonly {
        sys::mount_setattr(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, None, true).step("make read-only", source)?;
    }
    sys::move_mount_onto(tree.as_fd(), open_path(target)?.as_fd()).step("attach", target)
}

/// Walks `inside` (an absolute path in the sandbox) from the root one
/// component at a time, creating missing directories. A component that is
/// a symlink is refused: followed, it could lead out of the root.
fn walk_parents(root_fd: &OwnedFd, inside: &Path) -> Result<(OwnedFd, Option<CString>), StepError> {
    let mut dir = openat(root_fd, ".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .step("open root", "/")?;
    let parts: Vec<_> = inside.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let Some((last, parents)) = parts.split_last() else { return Ok((dir, None)) };
    for part in parents {
        let name =
            CString::new(part.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL).step("mkdir", inside)?;
        match mkdirat(&dir, name.as_c_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).step("mkdir", inside),
        }
        dir = openat(
            &dir,
            name.as_c_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| if e == Errno::ENOTDIR || e == Errno::ELOOP { Errno::ELOOP } else { e })
        .step("resolve mount target (symlinks are not followed)", inside)?;
    }
    let last = CString::new(last.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL).step("open", inside)?;
    Ok((dir, Some(last)))
}

/// A directory at `inside`, created if missing; returns its host-side path.
fn make_dir(root_fd: &OwnedFd, root: &Path, inside: &Path) -> Result<PathBuf, StepError> {
    let (parent, last) = walk_parents(root_fd, inside)?;
    if let Some(last) = &last {
        match mkdirat(&parent, last.as_c_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).step("mkdir", inside),
        }
        let fd = openat(
            &parent,
            last.as_c_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .step("resolve mount target (symlinks are not followed)", inside)?;
        drop(fd);
    }
    Ok(join_inside(root, inside))
}

/// The mount point of a file mount at `inside`, created if missing. One
/// there already is used as it is: the sandbox's root may not be allowed
/// to open it for writing (a file of the host's root, seen through a
/// read-only view of it), and needs not. A symlink there (a writable
/// rootfs's `/etc/resolv.conf` often is one) is resolved inside the root,
/// never beyond it, as runc does, and what it names must exist.
fn make_file(root_fd: &OwnedFd, inside: &Path) -> Result<OwnedFd, StepError> {
    let (parent, last) = walk_parents(root_fd, inside)?;
    let last = last.ok_or(Errno::EISDIR).step("mount a file on", inside)?;
    let o_path = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match fstatat(&parent, last.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK => {
            let relative = inside.strip_prefix("/").unwrap_or(inside);
            let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
            openat2(root_fd, relative, how).step("resolve the symlink (inside the root) to mount on", inside)
        }
        Ok(_) => openat(&parent, last.as_c_str(), o_path, Mode::empty()).step("open the mount point", inside),
        Err(Errno::ENOENT) => {
            let fd = openat(
                &parent,
                last.as_c_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .step("create the mount point", inside)?;
            drop(fd);
            openat(&parent, last.as_c_str(), o_path, Mode::empty()).step("open the mount point", inside)
        }
        Err(e) => Err(e).step("look at the mount point", inside),
    }
}

fn join_inside(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}
