//! Building the sandbox's root inside its mount namespace, as a linear
//! recipe. Runs in the init (root of the new user namespace), after
//! paddock has written the id maps. Every source arrives as a detached
//! mount created by paddock, so no host path is resolved in here with the
//! sandbox's credentials except the host's /dev nodes, /dev/null, the
//! init's own mountinfo (where it was not given what is mounted beneath
//! /sys), and /proc and /sys where they are bound. Every mount in the
//! root is attached onto a descriptor, never a path (see `build`); only the
//! overlay's staging tmpfs and the overlay itself are mounted by path, in
//! the init's own tmpfs over `/tmp`, which no one else can reach.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{chdir, fchdir, pivot_root, sethostname, symlinkat};

use super::config::{InitConfig, InitMount};
use super::sys;

/// A failed step: which one, on what, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{step} {target}: {}", self.reason())]
pub struct StepError {
    pub step: &'static str,
    pub target: String,
    pub errno: Errno,
    /// paddock's own refusal (`refuse`), not the kernel's: `errno` only
    /// says what kind.
    pub refused: bool,
}

impl StepError {
    /// The kernel's answer, or "refused" for paddock's own refusal.
    pub fn reason(&self) -> &'static str {
        if self.refused { "refused" } else { self.errno.desc() }
    }

    /// What to do, where the kernel's answer alone does not say.
    pub fn hint(&self) -> Option<&'static str> {
        match (self.step, self.errno) {
            (MAKE_LINK_TARGET, Errno::EACCES) => Some(
                "the workload's root may not write there: make the file in the rootfs, or chown that directory \
                 to the workload's first host uid (HOST UIDS in `paddock status`)",
            ),
            // A mount point missing in a writable rootfs, or in a directory
            // mounted before it (a mount beneath another).
            (RESOLVE_MOUNT_TARGET | CREATE_MOUNT_POINT, Errno::EACCES | Errno::EROFS) => Some(
                "the workload's root may not make the mount point there: make it beforehand in the rootfs or in \
                 the directory mounted there, or mount that directory with readonly = false and chown it to the \
                 workload's first host uid (HOST UIDS in `paddock status`)",
            ),
            // mount_too_revealing: a new proc or sysfs in a user namespace
            // must not show what mounts over the host's hide.
            (MOUNT_PROC, Errno::EPERM) | (MOUNT_SYSFS, Errno::EPERM) => Some(
                "the kernel refuses a sandbox its own /proc and /sys while mounts cover parts of the host's \
                 (a container's masked paths, systemd's ProtectKernelTunables= or ProtectKernelLogs=): \
                 run paddock where they are whole, as the paddock unit does",
            ),
            (ONE_FILE, Errno::EXDEV) => Some(
                "the second mount would hide the first: mount the file at one of them only (on a network, paddock \
                 mounts its own /etc/hosts and /etc/resolv.conf unless the manifest mounts a file there)",
            ),
            _ => None,
        }
    }
}

/// Steps `StepError::hint` knows.
const MOUNT_PROC: &str = "mount proc";
const MOUNT_SYSFS: &str = "mount sysfs";
const MOUNT_CGROUP: &str = "mount its cgroup";
const MAKE_LINK_TARGET: &str = "make what the symlink names (inside the root, following no other symlink)";
const RESOLVE_MOUNT_TARGET: &str = "resolve mount target (symlinks are not followed)";
const CREATE_MOUNT_POINT: &str = "create the mount point";
const ONE_FILE: &str = "mount two targets that lead to one file (through a symlink)";

/// Refusals of a file mount on a symlink that the mounts around it would
/// hide.
const BENEATH_LATER: &str = "mount on a symlink leading beneath a mount listed after it (list that mount first)";
const LEADS_ELSEWHERE: &str = "mount on a symlink that leads elsewhere once every mount is attached";

/// A path's names: no root, `.` or `..` (a mount target has no `..`).
fn names(path: &Path) -> impl Iterator<Item = Component<'_>> {
    path.components().filter(|c| matches!(c, Component::Normal(_)))
}

trait Step<T> {
    fn step(self, step: &'static str, target: impl AsRef<Path>) -> Result<T, StepError>;
}

impl<T> Step<T> for Result<T, Errno> {
    fn step(self, step: &'static str, target: impl AsRef<Path>) -> Result<T, StepError> {
        self.map_err(|errno| StepError { step, target: target.as_ref().display().to_string(), errno, refused: false })
    }
}

/// paddock refuses `step` on `target`, the kernel not asked: `kind` is
/// the errno the kernel would give such a case (EXDEV for a mount that
/// would land where it does not show), for `StepError::hint`.
fn refuse<T>(kind: Errno, step: &'static str, target: impl AsRef<Path>) -> Result<T, StepError> {
    Err(StepError { step, target: target.as_ref().display().to_string(), errno: kind, refused: true })
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
///
/// Every mount is attached onto a descriptor of the directory or file the
/// walk checked (`make_dir`, `make_file`), never onto a path resolved
/// again, and what is done inside `/proc`, `/dev` and `/sys` (masks,
/// read-only knobs, device nodes) is done through the descriptor of that
/// very mount: someone else who can write a writable rootfs (another
/// workload given the same directory) and renames its directories while
/// this runs, or swaps in a link, moves where a mount lands at worst,
/// never what it masks nor where a device node is made.
pub fn build(cfg: &InitConfig, rootfs: OwnedFd, mounts: Vec<OwnedFd>) -> Result<(), StepError> {
    // Nothing we mount may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .step("make / private", "/")?;
    // A read-only root whose rootfs already has every mount point is the
    // rootfs's own mount, made read-only; otherwise it is an overlay, so
    // that the missing ones can be made without writing to the host.
    let overlay = cfg.rootfs_readonly && !has_every_mount_point(&rootfs, cfg);
    let root_fd = if overlay {
        let root = overlay_root(cfg, rootfs)?;
        open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).step("open root", &root)?
    } else {
        attach_root(cfg, rootfs)?
    };

    let (nosuid, nodev, noexec) = (sys::MOUNT_ATTR_NOSUID, sys::MOUNT_ATTR_NODEV, sys::MOUNT_ATTR_NOEXEC);
    let at = make_dir(&root_fd, Path::new("/proc"), 0)?;
    let proc = if cfg.private_pid {
        attach(sys::fs_mount(c"proc", c"proc", &[], nosuid | nodev | noexec), &at, MOUNT_PROC, "/proc")?
    } else {
        // A user namespace that does not own the pid namespace cannot mount proc.
        attach_host_tree(c"/proc", &at, false, "/proc")?
    };
    // In the host's /proc of a sandbox in the host's pid namespace, only
    // for one in the host's user namespace too (whose root is the host's):
    // a remapped one sees the host's processes anyway, and reads none of these.
    for name in MASKED_PROC.iter().filter(|_| cfg.mask_paths && (cfg.private_pid || cfg.readonly_proc)) {
        mask(&proc, Path::new(name), Path::new("/proc"))?;
    }
    for name in READONLY_PROC.iter().filter(|_| cfg.readonly_proc) {
        readonly(&proc, Path::new(name), Path::new("/proc"))?;
    }

    let at = make_dir(&root_fd, Path::new("/dev"), 0)?;
    // nodev: a node made in it stays inert; the ones bound in are mounts
    // of their own, with the host's /dev's flags.
    let dev_attrs = nosuid | noexec | if cfg.nodev { nodev } else { 0 };
    let dev_options: &[_] = &[(c"mode", Some(c"0755")), (c"size", Some(c"64k"))];
    let dev = attach(sys::fs_mount(c"tmpfs", c"tmpfs", dev_options, dev_attrs), &at, "mount /dev", "/dev")?;
    for name in DEVICES {
        bind_device(&Path::new("/dev").join(name), &dev, Path::new(name), true)?;
    }
    if cfg.host_devices {
        bind_host_devices(Path::new("/dev"), &dev, Path::new("/dev"), 0)?;
    }
    let pts_options: &[_] = &[(c"newinstance", None), (c"ptmxmode", Some(c"0666")), (c"mode", Some(c"0620"))];
    let at = make_dir_in(&dev, "pts", Path::new("/dev/pts"))?;
    attach(sys::fs_mount(c"devpts", c"devpts", pts_options, nosuid | noexec), &at, "mount devpts", "/dev/pts")?;
    let shm_options: &[_] = &[(c"mode", Some(c"1777")), (c"size", Some(c"65536k"))];
    let at = make_dir_in(&dev, "shm", Path::new("/dev/shm"))?;
    attach(sys::fs_mount(c"tmpfs", c"shm", shm_options, nosuid | nodev | noexec), &at, "mount /dev/shm", "/dev/shm")?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlinkat(to, &dev, link).step("symlink", Path::new("/dev").join(link))?;
    }

    let at = make_dir(&root_fd, Path::new("/tmp"), 0)?;
    let tmp = attach(
        sys::fs_mount(c"tmpfs", c"tmpfs", &[(c"mode", Some(c"1777"))], nosuid | nodev),
        &at,
        "mount /tmp",
        "/tmp",
    )?;

    let at = make_dir(&root_fd, Path::new("/sys"), 0)?;
    let sys_mount = if cfg.own_network {
        let attrs = nosuid | nodev | noexec | sys::MOUNT_ATTR_RDONLY;
        attach(sys::fs_mount(c"sysfs", c"sysfs", &[], attrs), &at, MOUNT_SYSFS, "/sys")?
    } else {
        // sysfs can only be mounted by a user namespace that owns the
        // network namespace (as runc, the host's is bound read-only instead).
        attach_host_tree(c"/sys", &at, true, "/sys")?
    };
    // The host's firmware (EFI variables, DMI and ACPI tables), as runc masks it.
    if cfg.mask_paths {
        mask(&sys_mount, Path::new("firmware"), Path::new("/sys"))?;
        // RAPL energy counters: a power side channel (CVE-2020-8694), as
        // runc masks them; only a workload run as the host's root could read them.
        mask(&sys_mount, Path::new("devices/virtual/powercap"), Path::new("/sys"))?;
        // The host's /sys came with what the host mounts beneath it (its
        // cgroup tree, securityfs, debugfs, bpf): each is covered, so the
        // sandbox sees the empty directories a fresh sysfs has there.
        // A manifest's mount there, or beneath, shows it, as it would any
        // masked path.
        if !cfg.own_network {
            let found = match &cfg.sys_beneath {
                Some(found) => found.iter().map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(b))).collect(),
                None => {
                    let mountinfo = std::fs::read("/proc/self/mountinfo")
                        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
                        .step("read mountinfo", "/sys")?;
                    super::host_mounts::mounted_beneath(&mountinfo, b"/sys")
                }
            };
            let wanted =
                |beneath: &Path| cfg.mounts.iter().any(|m| m.target.starts_with(Path::new("/sys").join(beneath)));
            for beneath in found.iter().filter(|b| !wanted(b)) {
                match mask(&sys_mount, beneath, Path::new("/sys")) {
                    // Beneath a directory of the host's root alone (debugfs's
                    // 0700): the workload cannot reach it either.
                    Err(e) if e.errno == Errno::EACCES && !e.refused => {}
                    other => other?,
                }
            }
        }
    }

    // Its own cgroup (the root of the cgroup namespace the init unshared)
    // at /sys/fs/cgroup, read-only, as Docker shows a container its own:
    // where JVMs and Go runtimes read the limits they size themselves to.
    // Only for a sandbox born in a cgroup v2 of its own: otherwise the
    // namespace's root is the starting process's cgroup, not the
    // workload's to see. A manifest's mount there or beneath comes instead.
    // Where the kernel refuses it (a host that is itself a container, a
    // security module's policy), the directory stays empty, as on v1: the
    // sandbox starts as it did without it.
    if cfg.cgroup2 && !cfg.mounts.iter().any(|m| m.target.starts_with("/sys/fs/cgroup")) {
        let shown = Path::new("/sys/fs/cgroup");
        let at = make_dir(&sys_mount, shown, 1)?;
        // Read-only on the mount, not the superblock: that one is the host's too.
        let tree = sys::fs_mount(c"cgroup2", c"cgroup2", &[], nosuid | nodev | noexec)
            .and_then(|tree| sys::mount_setattr(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, None, false).map(|()| tree));
        match attach(tree, &at, MOUNT_CGROUP, "/sys/fs/cgroup") {
            Err(e) if matches!(e.errno, Errno::EPERM | Errno::EACCES | Errno::EINVAL | Errno::ENODEV) => {}
            other => drop(other?),
        }
    }

    // A target beneath one of the init's own mounts is made in that mount,
    // through its descriptor: the rootfs's entry of that name may have been
    // renamed since the mount was attached.
    // In `OWN_MOUNTS`' order.
    let own = [&proc, &dev, &tmp, &sys_mount];
    // A directory mounted on /proc, /dev, /tmp or /sys itself covers the
    // init's mount there: targets beneath it are made in it, through its
    // own descriptor, as the workload will see them.
    let mut covering: [Option<OwnedFd>; 4] = Default::default();
    // Each mount's id, and the file mounts made on a symlink.
    let (mut ids, mut through_links) = (Vec::with_capacity(cfg.mounts.len()), Vec::new());
    for (i, (m, fd)) in cfg.mounts.iter().zip(mounts).enumerate() {
        // The target is walked in the mount it lies in. A symlink at its
        // end is read from the root, as the workload reads it, except in
        // one of the init's own mounts that nothing covers (which holds
        // only the init's links, into /proc: refused either way).
        let (base, skip, links) = match own_mount_of(&m.target) {
            Some(n) => match &covering[n] {
                Some(covering) => (covering, 1, (&root_fd, 0)),
                None => (own[n], 1, (own[n], 1)),
            },
            None => (&root_fd, 0, (&root_fd, 0)),
        };
        let target = if m.is_dir {
            make_dir(base, &m.target, skip)?
        } else {
            let (target, through_link) = make_file(base, &m.target, skip, links, &cfg.mounts[i + 1..])?;
            // Two targets leading to one file (through a link): this mount
            // point is an earlier file mount, which this one would hide.
            let on = sys::mount_id(target.as_fd()).step("look at the mount point", &m.target)?;
            if let Some(k) = ids.iter().position(|&id| id == on).filter(|&k| !cfg.mounts[k].is_dir) {
                let both = format!("{} and {}", cfg.mounts[k].target.display(), m.target.display());
                return refuse(Errno::EXDEV, ONE_FILE, both);
            }
            if through_link {
                through_links.push(i);
            }
            target
        };
        ids.push(sys::mount_id(fd.as_fd()).step("look at the mount", &m.target)?);
        sys::move_mount_onto(fd.as_fd(), target.as_fd()).step("attach mount", &m.target)?;
        if let Some(n) = own_mount_at(&m.target).filter(|_| m.is_dir) {
            covering[n] = Some(fd);
        }
    }
    // A file mount made on a symlink lands where the link leads, which a
    // directory mounted after it may cover (a volume on the directory the
    // link leads into): the link, resolved again now as the workload will
    // resolve it, must still lead to its mount. Only those: a target that
    // is not a link cannot lie beneath a later one (`check` refuses that
    // by the targets' names), and a path is what someone renaming the
    // rootfs's directories makes it, so none is resolved again needlessly.
    for i in through_links {
        refuse_if_covered(&root_fd, &cfg.mounts, &ids, i)?;
    }

    sethostname(&cfg.hostname).step("sethostname", &cfg.hostname)?;
    if cfg.own_network {
        sys::loopback_up().step("bring up", "lo")?;
    }

    if overlay {
        // The overlay's own mount (`root_fd` is its root), and only it:
        // the flags it was mounted with (nodev) stay as they are.
        sys::mount_setattr(root_fd.as_fd(), sys::MOUNT_ATTR_RDONLY, None, false)
            .step("make the rootfs read-only", "/")?;
    }

    // pivot_root(".", ".") stacks the old root on the new one; detaching it
    // leaves only the new root, with no path back to the host's.
    fchdir(&root_fd).step("chdir", "/")?;
    pivot_root(".", ".").step("pivot_root", "/")?;
    umount2(".", MntFlags::MNT_DETACH).step("detach the old root", "/")?;
    chdir("/").step("chdir", "/")
}

/// Attaches `tree` (a new filesystem, or a step's failure to make one)
/// onto `target`; returns the attached mount, to reach into.
fn attach(
    tree: Result<OwnedFd, Errno>,
    target: &OwnedFd,
    step: &'static str,
    shown: &str,
) -> Result<OwnedFd, StepError> {
    let tree = tree.step(step, shown)?;
    sys::move_mount_onto(tree.as_fd(), target.as_fd()).step(step, shown)?;
    Ok(tree)
}

/// Where the init makes a mount of its own: a mount point beneath one of
/// them is resolved in that mount (or in the directory the manifest
/// mounts over it), never in the rootfs.
const OWN_MOUNTS: &[&str] = &["proc", "dev", "tmp", "sys"];

/// Which of `OWN_MOUNTS` a mount target lies beneath, if any: such a
/// target is made in the init's own mount there (or in the directory
/// mounted over it), never in the rootfs.
fn own_mount_of(target: &Path) -> Option<usize> {
    own_mount(target).filter(|&(_, beneath)| beneath).map(|(n, _)| n)
}

/// Which of `OWN_MOUNTS` a mount target is, if any: a directory mounted
/// there covers the init's own mount.
fn own_mount_at(target: &Path) -> Option<usize> {
    own_mount(target).filter(|&(_, beneath)| !beneath).map(|(n, _)| n)
}

/// Which of `OWN_MOUNTS` a mount target is or lies beneath (true).
fn own_mount(target: &Path) -> Option<(usize, bool)> {
    let mut parts = names(target);
    let (first, beneath) = (parts.next()?, parts.next().is_some());
    OWN_MOUNTS.iter().position(|d| first.as_os_str() == *d).map(|n| (n, beneath))
}

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
    let targets = cfg
        .mounts
        .iter()
        .filter(|m| own_mount_of(&m.target).is_none())
        .map(|m| (names(&m.target).collect::<PathBuf>(), m.is_dir));
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
/// Returns the rootfs's mount, attached: its descriptor is the root's.
fn attach_root(cfg: &InitConfig, rootfs: OwnedFd) -> Result<OwnedFd, StepError> {
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
    Ok(rootfs)
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
    for m in cfg.mounts.iter().filter(|m| own_mount_of(&m.target).is_none()) {
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
    let parts: Vec<_> = names(target).collect();
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
/// in the sandbox's /dev (`dev`, the directory there, `shown` its path);
/// what the sandbox has already is kept. Symlinks are not followed (a
/// device is bound where it is).
fn bind_host_devices(host: &Path, dev: &OwnedFd, shown: &Path, depth: usize) -> Result<(), StepError> {
    use std::os::unix::fs::FileTypeExt;
    let entries = match std::fs::read_dir(host) {
        // A directory gone since its parent was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        listed => listed.map_err(errno).step("read", host)?,
    };
    for entry in entries {
        let entry = entry.map_err(errno).step("read", host)?;
        let Ok(kind) = entry.file_type() else { continue };
        let name = entry.file_name();
        if depth == 0 && PRIVATE_IN_DEV.contains(&&*name.to_string_lossy()) {
            continue;
        }
        if kind.is_dir() && depth < 3 {
            let inside = shown.join(&name);
            let dir = make_dir_in(dev, &name, &inside)?;
            bind_host_devices(&entry.path(), &dir, &inside, depth + 1)?;
        } else if kind.is_char_device() || kind.is_block_device() {
            bind_device(&entry.path(), dev, Path::new(&name), false)?;
        }
    }
    Ok(())
}

/// Binds the host's device node `host` at `name` in `dev` (a directory of
/// the sandbox's /dev), unless something is there already. One gone from
/// the host (unplugged since it was listed) is not there either, unless
/// it is `required` (every sandbox's own, `DEVICES`).
fn bind_device(host: &Path, dev: &OwnedFd, name: &Path, required: bool) -> Result<(), StepError> {
    // The descriptor that made the mount point is the one mounted on.
    let create = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let target = match openat(dev, name, create, Mode::from_bits_truncate(0o644)) {
        Ok(fd) => fd,
        Err(Errno::EEXIST) => return Ok(()),
        Err(e) => return Err(e).step("create", host),
    };
    let source =
        CString::new(host.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL).step("bind device", host)?;
    match sys::open_tree_as_is(None, &source, false) {
        Err(Errno::ENOENT | Errno::ENODEV) if !required => {
            // Only our own empty mount point, in our own tmpfs: nothing to report.
            let _ = nix::unistd::unlinkat(dev, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
            Ok(())
        }
        tree => sys::move_mount_onto(tree.step("bind device", host)?.as_fd(), target.as_fd()).step("bind device", host),
    }
}

/// The directory `name` in `dir` (made if missing; `shown` is its path in
/// the sandbox), never through a symlink.
fn make_dir_in(dir: &OwnedFd, name: impl AsRef<Path>, shown: &Path) -> Result<OwnedFd, StepError> {
    dir_at(dir, name.as_ref()).step("make the directory", shown)
}

/// The directory `name` in `at`, never through a symlink (ENOTDIR): the
/// one there, or one made (0755) when there is none.
fn dir_at<P: ?Sized + nix::NixPath>(at: &OwnedFd, name: &P) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(at, name, flags, Mode::empty()) {
        Err(Errno::ENOENT) => match mkdirat(at, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => openat(at, name, flags, Mode::empty()),
            Err(e) => Err(e),
        },
        opened => opened,
    }
}

pub(super) fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn open_path(path: &Path) -> Result<OwnedFd, StepError> {
    open(path, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).step("open", path)
}

/// Covers `name` in `dir` (see `MASKED_PROC`; `shown` is `dir`'s path in
/// the sandbox): a file with `/dev/null` (the host's, as /dev's nodes are
/// bound), a directory with an empty read-only tmpfs. Nothing there is
/// nothing to hide.
fn mask(dir: &OwnedFd, name: &Path, shown: &Path) -> Result<(), StepError> {
    let shown = shown.join(name);
    let Some(target) = open_in(dir, name, "mask", &shown)? else { return Ok(()) };
    let is_dir = nix::sys::stat::fstat(&target).step("mask", &shown)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let cover = if is_dir {
        let attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC;
        sys::fs_mount(c"tmpfs", c"tmpfs", &[(c"size", Some(c"0")), (c"mode", Some(c"0555"))], attrs)
    } else {
        sys::open_tree_as_is(None, c"/dev/null", false)
    };
    attach(cover, &target, "mask", &shown.display().to_string()).map(drop)
}

/// Makes `name` in `dir` read-only where it is (`shown` is `dir`'s path
/// in the sandbox), with whatever is mounted below it (the host's
/// binfmt_misc under /proc/sys, say): a read-only copy of the tree
/// attached over itself. What this kernel does not have is skipped.
fn readonly(dir: &OwnedFd, name: &Path, shown: &Path) -> Result<(), StepError> {
    let shown = shown.join(name);
    let Some(target) = open_in(dir, name, "make read-only", &shown)? else { return Ok(()) };
    let tree = sys::open_tree_as_is(Some(target.as_fd()), c"", true).step("make read-only", &shown)?;
    sys::mount_setattr(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, None, true).step("make read-only", &shown)?;
    sys::move_mount_onto(tree.as_fd(), target.as_fd()).step("make read-only", &shown)
}

/// `name` in `dir`, not following a symlink; `None` when it is not there.
fn open_in(dir: &OwnedFd, name: &Path, step: &'static str, shown: &Path) -> Result<Option<OwnedFd>, StepError> {
    match openat(dir, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e).step(step, shown),
    }
}

/// Clones a tree of the host's (visible in our mount namespace until the
/// pivot, private there like every mount of it) onto `target`, read-only
/// when asked, keeping its submounts; returns the attached copy, to reach
/// into.
fn attach_host_tree(source: &CStr, target: &OwnedFd, readonly: bool, shown: &str) -> Result<OwnedFd, StepError> {
    let tree = sys::open_tree_as_is(None, source, true).step("open_tree", shown)?;
    if readonly {
        sys::mount_setattr(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, None, true).step("make read-only", shown)?;
    }
    attach(Ok(tree), target, "attach", shown)
}

/// Walks `inside` (an absolute path in the sandbox) one component at a
/// time from `base`, the root or, past its first `skip` components, one
/// of the init's own mounts (or the directory mounted over it), creating
/// missing directories. A component
/// that is a symlink is refused: followed, it could lead out of the root.
fn walk_parents(base: &OwnedFd, inside: &Path, skip: usize) -> Result<(Option<OwnedFd>, Option<CString>), StepError> {
    let parts: Vec<_> = names(inside).skip(skip).collect();
    let Some((last, parents)) = parts.split_last() else { return Ok((None, None)) };
    // `None`: `base` itself, with no descriptor of its own.
    let mut dir: Option<OwnedFd> = None;
    for part in parents {
        let name =
            CString::new(part.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL).step("mkdir", inside)?;
        let next = dir_at(dir.as_ref().unwrap_or(base), name.as_c_str())
            .map_err(|e| if e == Errno::ENOTDIR || e == Errno::ELOOP { Errno::ELOOP } else { e })
            .step(RESOLVE_MOUNT_TARGET, inside)?;
        dir = Some(next);
    }
    let last = CString::new(last.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL).step("open", inside)?;
    Ok((dir, Some(last)))
}

/// A directory at `inside`, created if missing, as a descriptor (the
/// mount point to attach onto); `base` and `skip` as `walk_parents`.
fn make_dir(base: &OwnedFd, inside: &Path, skip: usize) -> Result<OwnedFd, StepError> {
    let (parent, last) = walk_parents(base, inside, skip)?;
    let parent = parent.as_ref().unwrap_or(base);
    match &last {
        Some(last) => dir_at(parent, last.as_c_str()),
        None => openat(parent, ".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()),
    }
    .step(RESOLVE_MOUNT_TARGET, inside)
}

/// The mount point of a file mount at `inside`, created if missing. One
/// there already is used as it is: the sandbox's root may not be allowed
/// to open it for writing (a file of the host's root, seen through a
/// read-only view of it), and needs not. A symlink there (a writable
/// rootfs's `/etc/resolv.conf` often is one) is resolved inside the root,
/// never beyond it, as runc does, and must not lead onto what the init
/// made of /dev, /proc and /sys (a device node, such as the /dev/null a
/// mask is, or a file of proc, sysfs or devpts), which the mount would
/// cover. What it names is made when missing, where the link is read from
/// the root (`make_link_target`; `later` are the targets of the mounts
/// after this one). `base` and `skip` as
/// `walk_parents`; `links`, the same for resolving a symlink at the end.
/// Also says whether the mount point was reached through a symlink.
fn make_file(
    base: &OwnedFd,
    inside: &Path,
    skip: usize,
    (link_base, link_skip): (&OwnedFd, usize),
    later: &[InitMount],
) -> Result<(OwnedFd, bool), StepError> {
    let (parent, last) = walk_parents(base, inside, skip)?;
    let parent = parent.as_ref().unwrap_or(base);
    let Some(last) = last else { return refuse(Errno::EISDIR, "mount a file on", inside) };
    let o_path = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match fstatat(parent, last.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK => {
            let relative: PathBuf = names(inside).skip(link_skip).collect();
            let fd = match resolve_in_root(link_base, &relative) {
                // Only from the root: beneath one of the init's own mounts
                // the link would be read from that mount, not as the
                // workload reads it.
                Err(Errno::ENOENT) if link_skip == 0 => {
                    make_link_target(link_base, &relative, parent, &last, later)?;
                    resolve_in_root(link_base, &relative)
                }
                resolved => resolved,
            }
            .step("resolve the symlink (inside the root) to mount on", inside)?;
            if leads_into_own(&fd) {
                return refuse(
                    Errno::EXDEV,
                    "mount on a symlink leading into the sandbox's /dev, /proc or /sys",
                    inside,
                );
            }
            Ok((fd, true))
        }
        Ok(_) => openat(parent, last.as_c_str(), o_path, Mode::empty())
            .step("open the mount point", inside)
            .map(|fd| (fd, false)),
        // The descriptor that made it is the one mounted on: nothing
        // swapped in there since is.
        Err(Errno::ENOENT) => openat(
            parent,
            last.as_c_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .step(CREATE_MOUNT_POINT, inside)
        .map(|fd| (fd, false)),
        Err(e) => Err(e).step("look at the mount point", inside),
    }
}

/// Refuses `mounts[i]`, a file mount made on a symlink, when its target,
/// resolved again now that every mount is attached (`ids`: each mount's
/// id), leads elsewhere: beneath a directory mounted after it, which it
/// names where it can. (A later file mount on the same file was refused
/// when it was made.)
fn refuse_if_covered(root: &OwnedFd, mounts: &[InitMount], ids: &[u64], i: usize) -> Result<(), StepError> {
    let target = &mounts[i].target;
    let relative: PathBuf = names(target).collect();
    let now = resolve_in_root(root, &relative)
        .and_then(|fd| sys::mount_id(fd.as_fd()))
        .step("resolve the mount target again, every mount attached", target)?;
    if now == ids[i] {
        return Ok(());
    }
    match ids.iter().rposition(|&id| id == now).filter(|&j| j > i) {
        Some(j) => refuse(
            Errno::EXDEV,
            BENEATH_LATER,
            format!("{}, beneath the mount on {}", target.display(), mounts[j].target.display()),
        ),
        None => refuse(Errno::EXDEV, LEADS_ELSEWHERE, target),
    }
}

/// `relative` opened (O_PATH) from `root` as the workload would resolve
/// it: symlinks followed, `..` never above `root`.
fn resolve_in_root(root: &OwnedFd, relative: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    sys::openat2_retrying(root, relative, how)
}

/// Makes what the dangling symlink `name` in `dir` names, `link` being
/// its path from the root: the directories missing on the way and an
/// empty file, as runc makes a missing mount target (a writable rootfs's
/// `/etc/resolv.conf` links into `/run`, which an image leaves empty).
/// The link's text is read as RESOLVE_IN_ROOT would, from the root (an
/// absolute link) or the link's own directory, `..` never above the root;
/// then walked from the root one component at a time, never following a
/// symlink, so the path made is the one read. Refused before anything is
/// made: a text naming a directory, one going back up after a name, and
/// one leading to or beneath a mount listed after this one (`later`),
/// which would cover what is made here. An existing file is left as it
/// is (another symlink is refused), and the caller resolves the link
/// again.
fn make_link_target(
    root: &OwnedFd,
    link: &Path,
    dir: &OwnedFd,
    name: &CStr,
    later: &[InitMount],
) -> Result<(), StepError> {
    let refused = |kind: Errno, why: &'static str| refuse(kind, why, Path::new("/").join(link));
    let text = nix::fcntl::readlinkat(dir, name).step("read the symlink", Path::new("/").join(link))?;
    // Path::components drops a trailing `/` and `.`: looked at here.
    let bytes = text.as_encoded_bytes();
    let text = Path::new(&text);
    if bytes.ends_with(b"/")
        || bytes.ends_with(b"/.")
        || !matches!(text.components().next_back(), Some(Component::Normal(_)))
    {
        return refused(Errno::EISDIR, "mount a file on a symlink naming a directory");
    }
    // A `..` after a name of the text would undo a step the kernel takes
    // through that name, which may be a symlink (`/var/run/../x`, with
    // Debian's `/var/run -> /run`): read lexically it would name another
    // file. The link's own directories were walked without symlinks.
    if text.components().skip_while(|c| !matches!(c, Component::Normal(_))).any(|c| c == Component::ParentDir) {
        return refused(Errno::EINVAL, "make what a symlink names when its text goes back up (`a/../b`)");
    }
    let from = if text.is_absolute() { None } else { link.parent() };
    let mut path: Vec<&std::ffi::OsStr> = Vec::new();
    for part in from.into_iter().flat_map(Path::components).chain(text.components()) {
        match part {
            Component::Normal(part) => path.push(part),
            Component::ParentDir => drop(path.pop()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let made: PathBuf = path.iter().collect();
    let shown = format!("/{} -> /{}", link.display(), made.display());
    if let Some(covering) = later.iter().map(|m| names(&m.target).collect::<PathBuf>()).find(|t| made.starts_with(t)) {
        return refuse(Errno::EXDEV, BENEATH_LATER, format!("{shown}, beneath the mount on /{}", covering.display()));
    }
    let (file, parents) = path.split_last().expect("the text ends in a name (checked above)");
    let mut at: Option<OwnedFd> = None;
    for part in parents {
        let next = dir_at(at.as_ref().unwrap_or(root), *part)
            .map_err(|e| if e == Errno::ENOTDIR { Errno::ELOOP } else { e })
            .step(MAKE_LINK_TARGET, &shown)?;
        at = Some(next);
    }
    let at = at.as_ref().unwrap_or(root);
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(at, *file, flags, Mode::from_bits_truncate(0o644)) {
        Ok(_) => Ok(()),
        Err(Errno::EEXIST) => match fstatat(at, *file, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => Err(Errno::ELOOP).step(MAKE_LINK_TARGET, &shown),
            _ => Ok(()),
        },
        Err(e) => Err(e).step(MAKE_LINK_TARGET, &shown),
    }
}

/// Whether `fd` is a device node or a file of proc, sysfs or devpts: what
/// the init made of /dev, /proc and /sys (nothing of a rootfs or a volume
/// is: a device node there cannot be opened).
fn leads_into_own(fd: &OwnedFd) -> bool {
    use nix::sys::statfs::{DEVPTS_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC, fstatfs};
    let device =
        nix::sys::stat::fstat(fd).map_or(true, |st| matches!(st.st_mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK));
    device
        || fstatfs(fd).map_or(true, |fs| {
            let kind = fs.filesystem_type();
            kind == PROC_SUPER_MAGIC || kind == SYSFS_MAGIC || kind == DEVPTS_SUPER_MAGIC
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_beneath_proc_dev_tmp_or_sys_is_the_inits_own_mounts() {
        assert_eq!(own_mount_of(Path::new("/dev/extra")), Some(1));
        assert_eq!(own_mount_of(Path::new("/tmp/a/b")), Some(2));
        assert_eq!(own_mount_of(Path::new("/dev")), None, "the mount point itself is the rootfs's");
        assert_eq!(own_mount_of(Path::new("/devices/x")), None);
        assert_eq!(own_mount_of(Path::new("/etc/hosts")), None);
        assert_eq!(own_mount_at(Path::new("/tmp")), Some(2), "a mount there covers the init's");
        assert_eq!(own_mount_at(Path::new("/sys/")), Some(3));
        assert_eq!(own_mount_at(Path::new("/tmp/a")), None);
        assert_eq!(own_mount_at(Path::new("/tmpx")), None);
    }
}
