//! Small filesystem helpers shared by the modules that keep state, and
//! the checks on the directories that decide what runs as root (as sshd's
//! StrictModes): the workloads and policies directories, and
//! `volumes_root`, whose files a workload may own as the host's root.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub enum UnsafeInput {
    #[error("{path}: {source}")]
    Stat { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(transparent)]
    NotRootsAlone(#[from] NotRootsAlone),
    #[error(
        "volumes_root {path} can be entered by others (mode {mode:04o}): a workload can create set-user-ID files owned by the host's root in an idmapped volume, which any host user could then run; run `chmod o-rwx {path}`"
    )]
    VolumesTraversable { path: PathBuf, mode: u32 },
    #[error(
        "volumes_root {path} can be entered by its group, gid {gid} (mode {mode:04o}): a workload can create set-user-ID files owned by the host's root in an idmapped volume, which that group's members could then run; run `chmod g-rwx {path}` (or `chgrp root {path}`)"
    )]
    VolumesGroupTraversable { path: PathBuf, gid: u32, mode: u32 },
    #[error("{path} changed while it was being checked (a component became a symlink); try again")]
    Changed { path: PathBuf },
    #[error(transparent)]
    Link(crate::sandbox::Untrusted),
}

/// Why a file paddock trusts as root's was not read (`read_trusted`).
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFile {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Link(crate::sandbox::Untrusted),
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(transparent)]
    NotRootsAlone(#[from] NotRootsAlone),
}

/// What someone other than root could change, and what they could do
/// with it (`risk`, one of the `*_RISK` texts, ends the sentence "whoever
/// owns it ...").
#[derive(Debug, thiserror::Error)]
pub enum NotRootsAlone {
    #[error("{path} is owned by uid {uid}, not root: whoever owns it {risk}; run `chown root {path}`")]
    Owner { path: PathBuf, uid: u32, risk: &'static str },
    #[error("{path} is writable by {who} (mode {mode:04o}): whoever can write it {risk}; run `chmod go-w {path}`")]
    Writable { path: PathBuf, who: &'static str, mode: u32, risk: &'static str },
    /// A directory everyone shares (sticky and writable by others, as
    /// /tmp): not one to make root's, but the wrong place.
    #[error(
        "{path} is a directory others share (mode {mode:04o}, as /tmp is): whoever can write in it {risk}; name a directory of root's instead (as /run/paddock or /var/lib/paddock are), not this one"
    )]
    Shared { path: PathBuf, mode: u32, risk: &'static str },
}

/// The workloads and policies directories.
pub const RUNS_RISK: &str = "chooses what paddock runs as root";
/// volumes_root and its parents.
pub const VOLUMES_RISK: &str = "can swap what workloads mount as volumes";
/// A program run as root (a CNI plugin), its directory and their parents.
pub const PROGRAMS_RISK: &str = "can replace a program paddock runs as root";
/// The state directory, the run directory, the control socket's, and their parents.
pub const STATE_RISK: &str = "can swap the records, logs and network namespaces paddock keeps there as root for links to any file (a log appended to, a namespace unmounted, a recorded process killed)";

/// Refuses what is not root's (owner `uid`), or what others may write
/// (`mode`): whoever could change it would choose what paddock does as
/// root, as `risk` says.
pub fn roots_alone(path: &Path, uid: u32, mode: u32, risk: &'static str) -> Result<(), NotRootsAlone> {
    if uid != 0 {
        return Err(NotRootsAlone::Owner { path: path.to_owned(), uid, risk });
    }
    // Sticky and others-writable means shared only for a directory: a file
    // with those bits is simply writable by others.
    let directory = mode & libc::S_IFMT == libc::S_IFDIR;
    let mode = mode & 0o7777;
    match writers(mode) {
        Some(_) if directory && mode & 0o1002 == 0o1002 => {
            Err(NotRootsAlone::Shared { path: path.to_owned(), mode, risk })
        }
        Some(who) => Err(NotRootsAlone::Writable { path: path.to_owned(), who, mode, risk }),
        None => Ok(()),
    }
}

/// Reads a file that decides what paddock does as root (a policy, a
/// network's configuration). Run as root, the file must be root's and
/// writable by no one else, and a symlink on its way is followed only
/// where no one but root could have made it (`sandbox::open_trusted`); the
/// checks are made on the descriptor that is read, so a file swapped in
/// meanwhile is not the one read. Run as another user (`paddock check` in
/// a user's checkout) nothing runs as root, and the file is read as it is.
/// `risk` says what its owner could do, for the errors.
pub fn read_trusted(path: &Path, risk: &'static str, limit: u64) -> Result<String, UntrustedFile> {
    read_limited(path, Some(risk), limit)
}

/// Reads a regular file of at most `limit` bytes, whoever owns it: for
/// what decides nothing paddock does as root (the configuration a client
/// command reads for the daemon's socket).
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, UntrustedFile> {
    read_limited(path, None, limit)
}

/// `read_bounded`, its bytes as they are, UTF-8 or not (a file others
/// write lines of, as any user writes their comment field of /etc/passwd).
pub fn read_bounded_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, UntrustedFile> {
    read_limited_bytes(path, None, limit)
}

fn read_limited(path: &Path, risk: Option<&'static str>, limit: u64) -> Result<String, UntrustedFile> {
    let bytes = read_limited_bytes(path, risk, limit)?;
    // As read_to_string says it.
    String::from_utf8(bytes).map_err(|_| UntrustedFile::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"),
    })
}

fn read_limited_bytes(path: &Path, risk: Option<&'static str>, limit: u64) -> Result<Vec<u8>, UntrustedFile> {
    use std::io::Read;
    let io = |source: std::io::Error| UntrustedFile::Io { path: path.to_owned(), source };
    let trusting = risk.filter(|_| nix::unistd::geteuid().is_root());
    let as_root = trusting.is_some();
    let (file, found) = if as_root {
        crate::sandbox::open_trusted(path).map_err(|e| match e {
            crate::sandbox::Untrusted::Io(source) => io(source),
            link => UntrustedFile::Link(link),
        })?
    } else {
        // As open_trusted opens: a FIFO or a device named as a policy or
        // a conflist is refused below, not opened.
        (open_if_regular(path).map_err(io)?, path.to_owned())
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(UntrustedFile::NotAFile { path: found });
    }
    if let Some(risk) = trusting {
        roots_alone(&found, meta.uid(), meta.mode(), risk)?;
    }
    let mut text = Vec::new();
    file.take(limit + 1).read_to_end(&mut text).map_err(io)?;
    if text.len() as u64 > limit {
        return Err(UntrustedFile::TooLarge { path: found, limit });
    }
    Ok(text)
}

/// `file`, a descriptor of any kind (O_PATH too), opened again for reading,
/// non-blocking, when it is a regular file; anything else is handed back
/// as it is, unopened, for the caller to refuse by its type: opening a
/// device can act (a watchdog's starts its timer, a terminal becomes the
/// caller's), and a FIFO's open could block.
pub fn reopen_if_regular(file: std::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if !file.metadata()?.is_file() {
        return Ok(file);
    }
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Opens `path` for reading if it is a regular file (`reopen_if_regular`).
/// Without /proc (`check` in a bare container), the path is opened again
/// and must still be the file looked at.
pub fn open_if_regular(path: &Path) -> std::io::Result<std::fs::File> {
    // Not std's `custom_flags`: on musl, std masks O_PATH out with the
    // access mode (musl's O_ACCMODE holds it), which made this a plain
    // open, blocking on a FIFO and acting on a device.
    let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
    let found = std::fs::File::from(nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())?);
    let seen = found.metadata()?;
    match reopen_if_regular(found) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && seen.is_file() => {
            let file =
                std::fs::File::options().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
            let now = file.metadata()?;
            if (now.dev(), now.ino()) != (seen.dev(), seen.ino()) {
                return Err(std::io::Error::other("the file was replaced while it was opened; try again"));
            }
            Ok(file)
        }
        opened => opened,
    }
}

/// Who besides the owner may write, by the mode's bits.
pub(crate) fn writers(mode: u32) -> Option<&'static str> {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    }
}

/// Refuses a directory (the workloads or the policies directory) that is
/// not root's or that group or others may write. A symlink is followed: a
/// ConfigMap-style link is checked at its target.
pub fn check_directory(path: &Path) -> Result<(), UnsafeInput> {
    let meta = std::fs::metadata(path).map_err(|source| UnsafeInput::Stat { path: path.to_owned(), source })?;
    if !meta.is_dir() {
        return Err(UnsafeInput::NotADirectory { path: path.to_owned() });
    }
    Ok(roots_alone(path, meta.uid(), meta.mode(), RUNS_RISK)?)
}

/// Whether any user can reach files in `dir` by name: it and each of its
/// ancestors (after symlinks) can be entered by others. Manifests hold
/// secrets (`env`), and a workload whose root is the host's `/` sees the
/// host's files as one of those others.
pub fn reachable_by_others(dir: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(dir) else { return false };
    real.ancestors().all(|p| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// Opens `volumes_root` for resolving idmapped mount sources beneath it.
/// It must be a directory that only root may change or enter: itself
/// root's, writable by no one else and not traversable by others, nor by
/// its group unless that group is root's (a
/// workload can create set-user-ID files owned by the host's root in an
/// idmapped volume; no host user may reach them), and each of its
/// ancestors root's and not writable by others (a sticky directory such
/// as /tmp is allowed: no one else can move root's entry in it). The path
/// is walked from `/` one component at a time without following symlinks,
/// so what was checked is what is returned.
pub fn open_volumes_root(path: &Path) -> Result<OwnedFd, UnsafeInput> {
    let (dir, real) = open_root_only(path, VOLUMES_RISK)?;
    let meta =
        nix::sys::stat::fstat(&dir).map_err(|e| UnsafeInput::Stat { path: path.to_owned(), source: e.into() })?;
    let mode = meta.st_mode & 0o7777;
    if mode & 0o001 != 0 {
        return Err(UnsafeInput::VolumesTraversable { path: real, mode });
    }
    if mode & 0o010 != 0 && meta.st_gid != 0 {
        return Err(UnsafeInput::VolumesGroupTraversable { path: real, gid: meta.st_gid, mode });
    }
    Ok(dir)
}

/// Refuses a directory that only root may be able to change, unless it
/// and each of its ancestors are root's and writable by no one else (a
/// sticky ancestor such as /tmp aside), and every symlink on the way is
/// one only root could have made; `risk` says what someone else could do
/// with it. For the directories where the daemon keeps what it acts on as
/// root (`STATE_RISK`: the state directory, the run directory, the
/// control socket's; a user who could change one could swap a log, a
/// record or a namespace's mount point for a link to any file; others may
/// read them, as status tools do, and the daemon makes the ones it creates
/// 0700), and for the directories root's programs search for programs they
/// run in turn (`PROGRAMS_RISK`: a CNI plugin directory, where a plugin
/// finds its IPAM plugin; whoever could add one there, ahead of the real
/// one, would run it as root).
pub fn check_root_dir(path: &Path, risk: &'static str) -> Result<(), UnsafeInput> {
    trusted_links(path)?;
    open_root_only(path, risk).map(drop)
}

/// Refuses a path that goes through a symlink someone other than root
/// could have made (`sandbox::open_trusted`'s rule). The checks after it
/// look at the path the links lead to, and the daemon goes on using the
/// path as written: a link that someone else could change would lead it
/// elsewhere afterwards.
fn trusted_links(path: &Path) -> Result<(), UnsafeInput> {
    match crate::sandbox::open_trusted(path) {
        Ok(_) => Ok(()),
        Err(crate::sandbox::Untrusted::Io(source)) => Err(UnsafeInput::Stat { path: path.to_owned(), source }),
        Err(link) => Err(UnsafeInput::Link(link)),
    }
}

/// Refuses a program paddock is to run as root (a CNI plugin) unless it
/// (after its symlinks) is root's and writable by no one else, and so are
/// its directory and each of that directory's ancestors (a sticky one
/// aside): whoever could replace it would run as root.
pub fn check_root_program(path: &Path) -> Result<(), UnsafeInput> {
    trusted_links(path)?;
    let stat_err = |source: std::io::Error| UnsafeInput::Stat { path: path.to_owned(), source };
    let real = std::fs::canonicalize(path).map_err(stat_err)?;
    let (dir, _) = open_root_only(real.parent().unwrap_or(Path::new("/")), PROGRAMS_RISK)?;
    let name = real.file_name().ok_or_else(|| stat_err(std::io::ErrorKind::InvalidInput.into()))?;
    let st = nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| stat_err(e.into()))?;
    Ok(roots_alone(&real, st.st_uid, st.st_mode, PROGRAMS_RISK)?)
}

/// Opens a directory that only root may change: itself and each of its
/// ancestors root's and writable by no one else (an ancestor may be
/// sticky, as /tmp is: no one else can move root's entry in it). The path
/// is walked from `/` one component at a time without following symlinks,
/// so what was checked is what is returned, with the path it resolved to.
fn open_root_only(path: &Path, risk: &'static str) -> Result<(OwnedFd, PathBuf), UnsafeInput> {
    let stat_err = |source: std::io::Error| UnsafeInput::Stat { path: path.to_owned(), source };
    // A configured path may go through symlinks (/var/lib -> /data/lib):
    // resolve them once, then walk the result refusing any symlink.
    let real = std::fs::canonicalize(path).map_err(stat_err)?;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = nix::fcntl::open("/", flags, Mode::empty()).map_err(|e| stat_err(e.into()))?;
    let mut walked = PathBuf::from("/");
    let parts: Vec<Component<'_>> = real.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    for part in &parts {
        let meta = nix::sys::stat::fstat(&dir).map_err(|e| stat_err(e.into()))?;
        check_ancestor(&walked, meta.st_uid, meta.st_mode, risk)?;
        walked.push(part);
        // canonicalize resolved every symlink: one now is a swap since.
        dir = openat(&dir, part.as_os_str(), flags, Mode::empty()).map_err(|e| match e {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => UnsafeInput::Changed { path: path.to_owned() },
            e => UnsafeInput::Stat { path: walked.clone(), source: e.into() },
        })?;
    }
    let meta = nix::sys::stat::fstat(&dir).map_err(|e| stat_err(e.into()))?;
    roots_alone(&real, meta.st_uid, meta.st_mode, risk)?;
    Ok((dir, real))
}

/// An ancestor of a root-only directory: root's, and writable by no one
/// else unless sticky (as /tmp: no one else can move root's entry in it).
fn check_ancestor(path: &Path, uid: u32, mode: u32, risk: &'static str) -> Result<(), UnsafeInput> {
    let sticky = mode & 0o1000 != 0;
    Ok(roots_alone(path, uid, if sticky { mode & !0o022 } else { mode }, risk)?)
}

/// An exclusive lock (flock) on `path`, created if missing, tried every
/// `every` for up to `patience`: `Ok(None)` when another held it all that
/// time. `waiting` is called once, the first time it is found held.
pub fn lock_within(
    path: &Path,
    patience: std::time::Duration,
    every: std::time::Duration,
    mut waiting: impl FnMut(),
) -> std::io::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    use nix::fcntl::{Flock, FlockArg};
    let mut file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let deadline = std::time::Instant::now() + patience;
    let mut said = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                if !std::mem::replace(&mut said, true) {
                    waiting();
                }
                file = back;
                std::thread::sleep(every);
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(e.into()),
        }
    }
}

/// Creates `path` and any missing parent with mode 0700: state directories
/// (ids, records, logs) are root's alone. Existing directories are left as
/// they are.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Replaces `path` atomically: write a temporary file beside it, fsync it,
/// rename it over, fsync the directory. A reader sees the old or the new
/// contents, never a mix; a crash leaves one of them. The mode and owner of
/// an existing file are kept (`default_mode` is for a new one).
pub fn write_atomic(path: &Path, contents: &[u8], default_mode: u32) -> std::io::Result<()> {
    replace(path, contents, default_mode, true)
}

/// Whether a read failed for want of something the host may have again
/// in a moment (descriptors, memory), not for what the file is: what
/// failed so says nothing of the file, and is read again.
pub fn for_a_moment(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR))
}

/// Where an unreadable state file at `path` is kept for a post-mortem:
/// `PATH.corrupt`, or the first of `PATH.corrupt.1` to `.9` not taken, so
/// a later corruption does not overwrite an earlier one's copy (past
/// those, the latest replaces the ninth: a file corrupted again and again
/// does not fill the disk).
pub fn aside(path: &Path) -> PathBuf {
    let name = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(if n == 0 { ".corrupt".to_owned() } else { format!(".corrupt.{n}") });
        PathBuf::from(name)
    };
    (0..9).map(name).find(|p| std::fs::symlink_metadata(p).is_err()).unwrap_or_else(|| name(9))
}

/// As `write_atomic`, without the fsyncs: for records that only matter
/// while the machine stays up (what a crash of the machine loses, it also
/// made moot, such as the processes a record describes).
pub fn write_replace(path: &Path, contents: &[u8], default_mode: u32) -> std::io::Result<()> {
    replace(path, contents, default_mode, false)
}

fn replace(path: &Path, contents: &[u8], default_mode: u32, sync: bool) -> std::io::Result<()> {
    stage(path, contents, default_mode, sync)?.commit()?;
    if sync {
        sync_dir(parent(path))?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Numbers this process's temporary files (`stage`).
static TEMP_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether `name` is one of `stage`'s temporary files (`.NAME.PID.N.tmp`):
/// one left by a process killed mid-write may be removed.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Removes the temporary files in `dir` (`stage`'s) whose writer is gone:
/// a process killed mid-write leaves its own for good. Those of a live
/// process (a `paddock run` or a daemon beside this one, writing now) are
/// left alone, as are those of a pid reused since (removed by the next
/// sweep after it ends).
pub fn remove_abandoned_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| is_temporary(n)) else { continue };
        // `.NAME.PID.N.tmp`: the writer's pid is the third field from the end.
        let Some(pid) = name.rsplit('.').nth(2).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A file written in full beside its destination, not yet in its place:
/// `write_atomic` in halves, for a batch that stages each file, commits
/// each, then syncs their directory once. Dropped uncommitted, the
/// temporary file is removed.
pub struct Staged {
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl Staged {
    /// Renames it over its destination: readers see it at once; it is
    /// durable once its directory is synced (`sync_dir`).
    pub fn commit(mut self) -> std::io::Result<()> {
        let tmp = self.tmp.take().expect("a staged file is committed once");
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `contents` to a temporary file beside `path` (fsynced when
/// `sync`), with the mode and owner of an existing `path` (`default_mode`
/// for a new one).
pub fn stage(path: &Path, contents: &[u8], default_mode: u32, sync: bool) -> std::io::Result<Staged> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let existing = std::fs::metadata(path).ok();
    let mode = existing.as_ref().map_or(default_mode, |m| m.permissions().mode() & 0o7777);
    // Unique within this process (two threads may write the same path); one
    // there already is a leftover of a process that had this pid before (a
    // daemon killed, or one that re-executed itself mid-write): removed.
    let serial = TEMP_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent(path).join(format!(".{}.{}.{serial}.tmp", name.to_string_lossy(), std::process::id()));
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp);
    let mut f = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create()?
        }
        other => other?,
    };
    // From here the temporary file is the Staged's, removed if it is dropped.
    let staged = Staged { tmp: Some(tmp), path: path.to_owned() };
    f.write_all(contents)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some(m) = &existing {
        std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
    }
    if sync {
        f.sync_all()?;
    }
    Ok(staged)
}

/// Makes the renames and removals in `dir` durable (fsync of the directory).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A tmpfs of a few pages, for tests of a full disk (root only); unmounted
/// when dropped, a failed assertion included.
#[cfg(test)]
pub struct SmallTmpfs(tempfile::TempDir);

#[cfg(test)]
impl SmallTmpfs {
    pub fn mount(size: &str) -> Self {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root (it mounts a small tmpfs)");
        let dir = tempfile::tempdir().unwrap();
        let options = format!("size={size}");
        nix::mount::mount(Some("tmpfs"), dir.path(), Some("tmpfs"), nix::mount::MsFlags::empty(), Some(&*options))
            .unwrap();
        SmallTmpfs(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Room again (or less).
    pub fn resize(&self, size: &str) {
        let options = format!("size={size}");
        let flags = nix::mount::MsFlags::MS_REMOUNT;
        nix::mount::mount(Some("tmpfs"), self.path(), Some("tmpfs"), flags, Some(&*options)).unwrap();
    }
}

#[cfg(test)]
impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies of corrupt files are kept side by side, at most ten.
    #[test]
    fn aside_takes_the_first_free_name_and_stops_at_ten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.json");
        for n in 0..12 {
            let aside = aside(&file);
            let expected = match n {
                0 => "t.json.corrupt".to_owned(),
                1..=9 => format!("t.json.corrupt.{n}"),
                _ => "t.json.corrupt.9".to_owned(),
            };
            assert_eq!(aside, dir.path().join(expected));
            std::fs::write(aside, n.to_string()).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 10);
        assert_eq!(std::fs::read_to_string(dir.path().join("t.json.corrupt")).unwrap(), "0");
    }

    /// A FIFO is never opened, on either C library (musl's std masked
    /// O_PATH out, and the open blocked for a writer): the handle is O_PATH.
    #[test]
    fn a_fifo_is_looked_at_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            done.send(
                open_if_regular(&fifo)
                    .map(|f| nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL).unwrap() & libc::O_PATH),
            )
        });
        let flags = finished.recv_timeout(std::time::Duration::from_secs(10)).expect("the open of a FIFO blocked");
        assert_eq!(flags.unwrap(), libc::O_PATH);
    }

    /// Without /proc (a tmpfs over it, in a mount namespace of this test's
    /// thread alone), a regular file is opened by its path again, and a
    /// FIFO is handed back unopened (an open would block).
    #[test]
    fn without_proc_a_regular_file_is_opened_by_its_path_and_a_fifo_is_not_opened() {
        use std::io::Read;
        use std::os::unix::fs::FileTypeExt;

        use nix::mount::{MsFlags, mount};
        assert!(nix::unistd::geteuid().is_root(), "this test makes a mount namespace and must run as root");
        let dir = tempfile::tempdir().unwrap();
        let (file, fifo) = (dir.path().join("m.toml"), dir.path().join("fifo.toml"));
        std::fs::write(&file, "command = [\"x\"]\n").unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let read = std::thread::spawn(move || {
            // This thread's own mount namespace, and nothing of it seen outside.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_FS).unwrap();
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).unwrap();
            mount(Some("none"), "/proc", Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
            assert!(!Path::new("/proc/self").exists(), "/proc is still there");
            let mut text = String::new();
            open_if_regular(&file).unwrap().read_to_string(&mut text).unwrap();
            let fifo = open_if_regular(&fifo).unwrap();
            (text, fifo.metadata().unwrap().file_type().is_fifo())
        });
        assert_eq!(read.join().unwrap(), ("command = [\"x\"]\n".to_owned(), true));
        assert!(Path::new("/proc/self").exists(), "the test's /proc stayed its own");
    }

    #[test]
    fn only_a_directory_is_refused_as_shared_a_file_with_the_same_bits_is_writable() {
        let shared = roots_alone(Path::new("/x"), 0, libc::S_IFDIR | 0o1777, RUNS_RISK);
        assert!(matches!(shared, Err(NotRootsAlone::Shared { .. })), "{shared:?}");
        let file = roots_alone(Path::new("/x"), 0, libc::S_IFREG | 0o1666, RUNS_RISK);
        assert!(matches!(file, Err(NotRootsAlone::Writable { .. })), "{file:?}");
        assert!(file.unwrap_err().to_string().contains("chmod go-w /x"));
    }

    #[test]
    fn a_program_run_as_root_must_be_roots_alone_and_so_must_its_directory() {
        assert!(nix::unistd::geteuid().is_root(), "this test makes files of another user's and must run as root");
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let plugin = bin.join("bridge");
        std::fs::write(&plugin, "#!/bin/sh\n").unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(&bin, 0o755);
        mode(&plugin, 0o755);
        check_root_program(&plugin).unwrap();
        mode(&plugin, 0o775);
        let e = check_root_program(&plugin).unwrap_err().to_string();
        assert!(
            e.contains("bridge is writable by its group") && e.contains("can replace a program paddock runs as root"),
            "{e}"
        );
        mode(&plugin, 0o755);
        std::os::unix::fs::chown(&plugin, Some(1000), None).unwrap();
        assert!(check_root_program(&plugin).unwrap_err().to_string().contains("owned by uid 1000"));
        std::os::unix::fs::chown(&plugin, Some(0), None).unwrap();
        mode(&bin, 0o777);
        assert!(check_root_program(&plugin).unwrap_err().to_string().contains("bin is writable by group and others"));
        mode(&bin, 0o755);
        // A link is judged by what it leads to: here a program in a directory others may write.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        mode(&open, 0o777);
        std::fs::write(open.join("real"), "").unwrap();
        mode(&open.join("real"), 0o755);
        std::os::unix::fs::symlink(open.join("real"), bin.join("portmap")).unwrap();
        assert!(check_root_program(&bin.join("portmap")).unwrap_err().to_string().contains("open is writable"));
        // A link others could change, to a program that is root's alone:
        // the path run later would follow it wherever it leads then.
        std::os::unix::fs::symlink(&plugin, open.join("bridge")).unwrap();
        let e = check_root_program(&open.join("bridge")).unwrap_err().to_string();
        assert!(e.contains("a symlink that someone other than root could have made"), "{e}");
    }

    #[test]
    fn a_state_directory_reached_through_a_link_others_could_change_is_refused() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root's own directories");
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        check_root_dir(&state, STATE_RISK).unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&state, shared.join("state")).unwrap();
        let e = check_root_dir(&shared.join("state"), STATE_RISK).unwrap_err().to_string();
        assert!(e.contains("a symlink that someone other than root could have made"), "{e}");
    }

    #[test]
    fn a_leftover_temporary_file_never_blocks_a_write_and_two_threads_never_share_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.json");
        // What a process with this pid left before (killed mid-write, or re-executed).
        let next = TEMP_SERIAL.load(std::sync::atomic::Ordering::Relaxed);
        for serial in next..next + 64 {
            std::fs::write(dir.path().join(format!(".table.json.{}.{serial}.tmp", std::process::id())), "torn")
                .unwrap();
        }
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    (0..50).for_each(|i| write_atomic(path, format!("{t}.{i}").as_bytes(), 0o600).unwrap())
                });
            }
        });
        assert!(String::from_utf8(std::fs::read(&path).unwrap()).unwrap().ends_with(".49"));
        assert!(is_temporary(".table.json.7.3.tmp") && !is_temporary("table.json"));
    }

    #[test]
    fn only_the_temporary_files_of_writers_that_are_gone_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A pid above pid_max's ceiling (2^22) is no process's.
        let gone = format!(".run1-2.json.{}.0.tmp", 1 << 23);
        let live = format!(".run1-2.json.{}.0.tmp", std::process::id());
        for name in [gone.as_str(), live.as_str(), "run1-2.json", ".hidden", ".x.notapid.0.tmp"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        remove_abandoned_temporaries(dir.path());
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".hidden", live.as_str(), ".x.notapid.0.tmp", "run1-2.json"]);
    }

    fn private(dir: &Path) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn volumes_root_must_be_roots_alone_and_its_ancestors_safe() {
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let vols = top.path().join("volumes");
        create_private_dir(&vols).unwrap();
        assert_eq!(std::fs::metadata(&vols).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(open_volumes_root(&vols).is_ok());
        // Reached through a symlink: checked (and returned) at its target.
        std::os::unix::fs::symlink(&vols, top.path().join("link")).unwrap();
        assert!(open_volumes_root(&top.path().join("link")).is_ok());

        std::fs::set_permissions(&vols, std::fs::Permissions::from_mode(0o711)).unwrap();
        let err = open_volumes_root(&vols).unwrap_err().to_string();
        assert!(err.contains("can be entered by others (mode 0711)") && err.contains("chmod o-rwx"), "{err}");
        std::fs::set_permissions(&vols, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(open_volumes_root(&vols).unwrap_err().to_string().contains("writable by its group"));
        // Entered by its group: root's group only.
        std::fs::set_permissions(&vols, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(open_volumes_root(&vols).is_ok(), "0750 with root's group");
        std::os::unix::fs::chown(&vols, None, Some(1000)).unwrap();
        let err = open_volumes_root(&vols).unwrap_err().to_string();
        assert!(
            err.contains("can be entered by its group, gid 1000 (mode 0750)") && err.contains("chmod g-rwx"),
            "{err}"
        );
        std::os::unix::fs::chown(&vols, None, Some(0)).unwrap();
        private(&vols);
        std::os::unix::fs::chown(&vols, Some(1000), None).unwrap();
        assert!(open_volumes_root(&vols).unwrap_err().to_string().contains("owned by uid 1000"));
        std::os::unix::fs::chown(&vols, Some(0), None).unwrap();

        // An ancestor others may write: they could swap volumes_root itself.
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_volumes_root(&vols).unwrap_err().to_string();
        assert!(err.contains(&format!("{} is writable by group and others", top.path().display())), "{err}");
        // Unless it is sticky, as /tmp is: then nobody else can move root's entry.
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(open_volumes_root(&vols).is_ok());
    }

    #[test]
    fn a_directory_is_reachable_by_others_only_through_ancestors_they_may_enter() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("workloads");
        std::fs::create_dir(&dir).unwrap();
        for d in [top.path(), &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert!(reachable_by_others(&dir));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by_others(&dir));
        // Its own mode open, a parent closed (git-sync's checkouts).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by_others(&dir));
        // Through a link: the directory it leads to.
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&dir, open.path().join("link")).unwrap();
        assert!(!reachable_by_others(&open.path().join("link")));
        assert!(!reachable_by_others(&top.path().join("missing")));
    }

    #[test]
    fn replaces_contents_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
