//! The remap user (`paddock` by default): found in passwd, or created as a
//! system user with ranges in /etc/subuid and /etc/subgid, as Docker does
//! for `dockremap`. Every path is injectable so tests use temp copies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::subid::{self, IdRange, SubIdEntry};
use crate::fsutil::write_atomic;

/// The user that `remap.user = "default"` means.
pub const DEFAULT_REMAP_USER: &str = "paddock";
/// The size of the range given to the user paddock creates: 256 slices of
/// 65536. (Docker gives `dockremap` one slice, but it maps every container
/// to the same range; per-workload isolation needs one slice per workload.)
pub const NEW_RANGE_SIZE: u32 = 65536 * 256;

/// Where the account files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFiles {
    pub passwd: AccountFile,
    pub group: AccountFile,
    pub subuid: AccountFile,
    pub subgid: AccountFile,
}

/// An account file, and what named it: its errors say both, so that an
/// operator knows which file and where to name another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFile {
    pub path: PathBuf,
    pub named_by: NamedBy,
}

/// What named an account file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedBy {
    /// `[remap] KEY` of the configuration, written at `at`
    /// (`FILE:LINE:COLUMN`) when that is known (a re-executed daemon
    /// keeps the running one's, whose lines it did not read).
    Config { key: &'static str, at: Option<String> },
    /// paddock's default for `[remap] KEY`: the configuration `config`
    /// (which may not exist) does not set it.
    Default { key: &'static str, config: PathBuf },
    /// A flag of `paddock run` (`--subuid`) for `[remap] KEY`.
    Flag { flag: &'static str, key: &'static str },
}

impl NamedBy {
    /// The `[remap]` key the file stands for (`subuid`): its default is
    /// `/etc/KEY`.
    pub fn key(&self) -> &'static str {
        match self {
            NamedBy::Config { key, .. } | NamedBy::Default { key, .. } | NamedBy::Flag { key, .. } => key,
        }
    }
}

impl std::fmt::Display for NamedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedBy::Config { key, at: Some(at) } => write!(f, "named by `[remap] {key}` at {at}"),
            NamedBy::Config { key, at: None } => write!(f, "named by `[remap] {key}` in the configuration"),
            NamedBy::Default { key, config } => {
                write!(f, "the default of `[remap] {key}`, which {} does not set", config.display())
            }
            NamedBy::Flag { flag, .. } => write!(f, "named by {flag}"),
        }
    }
}

impl AccountFile {
    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "cannot read {} ({}): {source}; make it a text file root can read, or name another file there",
        file.display(),
        file.named_by
    )]
    Read { file: AccountFile, source: std::io::Error },
    #[error(
        "{} does not exist ({}); name the file you meant there, or create it (it may be empty: paddock adds its user and ranges, away from only the ranges it lists)",
        file.display(),
        file.named_by
    )]
    Missing { file: AccountFile },
    /// Not a regular file of an account file's size (a FIFO, a device).
    #[error("{source} ({}): name an account file itself there, such as /etc/{}", named_by, named_by.key())]
    NotAccounts { source: crate::fsutil::UntrustedFile, named_by: NamedBy },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "{}:{}: {} ({}); mend the line, or name another file there",
        file.display(),
        source.line,
        source.message,
        file.named_by
    )]
    Parse { file: AccountFile, source: subid::SubIdParseError },
    #[error(
        "{}:{line}: no numeric id in the third field, as `name:password:ID:...` has ({}); mend the line, or name another file there",
        file.display(),
        file.named_by
    )]
    Passwd { file: AccountFile, line: usize },
    #[error("remap user `{user}` does not exist in {path}; create it, or set remap.user = \"default\"")]
    NoSuchUser { user: String, path: PathBuf },
    #[error("user `{user}` has no range in {path}; add a line `{user}:START:COUNT` (65536 ids per workload)")]
    NoRanges { user: String, path: PathBuf },
    #[error(
        "{path}: `{user}:0:{count}` maps workload ids onto id 0, the host's root, which a workload must never be; \
         give `{user}` a range of unprivileged ids instead (such as `{user}:100000:65536`, or remove its lines and \
         set remap.user = \"default\" for paddock to add one)"
    )]
    HostRoot { user: String, path: PathBuf, count: u32 },
    /// A range of the remap user too small for one slice: a workload
    /// given it would have fewer ids than its manifest was checked
    /// against (the validator allows any id below the slice size).
    #[error(
        "{}:{line}: {user}'s range {}:{} holds {} ids, fewer than a workload's slice (slice_size = {slice_size}), so a workload given it would have fewer ids than its manifest was checked against ({}); give the range at least {slice_size} ids, remove it if {user} has others, or set slice_size to {} or less",
        file.display(),
        range.start,
        range.count,
        range.count,
        file.named_by,
        range.count
    )]
    ShortRange { file: AccountFile, line: usize, user: String, range: IdRange, slice_size: u32 },
    #[error("no free system uid/gid below 1000 in {passwd} and {group} for user `{user}`")]
    NoSystemId { user: String, passwd: PathBuf, group: PathBuf },
    #[error("no free range of {count} ids is left in {subuid} and {subgid}")]
    NoFreeRange { count: u32, subuid: PathBuf, subgid: PathBuf },
    #[error(
        "{path} is held{}: another tool (useradd, usermod, vipw) is changing the account files, and paddock waited {}s to add its user; try again when it is done, or, if no such tool runs, remove {path}",
        holder.map(|pid| format!(" by process {pid}")).unwrap_or_default(),
        waited.as_secs()
    )]
    Locked { path: PathBuf, holder: Option<i32>, waited: Duration },
    #[error(
        "{path} is locked (lckpwdf): another tool (useradd, usermod, vipw) is changing the account files, and paddock waited {}s to add its user; try again when it is done (the lock is its process's: it ends with it, and removing the file releases nothing)",
        waited.as_secs()
    )]
    PwdLocked { path: PathBuf, waited: Duration },
}

/// The remap user's ranges: uids and gids, each in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemapRanges {
    pub user: String,
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

/// The largest account file read: far more than the accounts and ranges
/// of any host (a million lines), far less than what would exhaust memory.
const MAX_ACCOUNT_FILE_BYTES: u64 = 64 << 20;

/// An account file's text (empty when the default's does not exist: a
/// host without /etc/subuid, say). Only a regular file is read, and only
/// so much of it: the configuration may name any path, and a FIFO's open
/// would block (the daemon's start, `--validate`) for good, a device such
/// as /dev/zero never ends. A file the configuration or a flag names that
/// does not exist is an error: a typo there would have paddock add its
/// user and a range to a new file, beside the host's own, whose ranges it
/// would not see (a range it picked could be another user's).
///
/// Its bytes, as they are: a line need not be UTF-8 (any user may write
/// a Latin-1 name into their own comment field with chfn), and a file
/// paddock adds a line to keeps every other byte.
fn read_optional(file: &AccountFile) -> Result<Vec<u8>, AccountError> {
    use crate::fsutil::UntrustedFile;
    match crate::fsutil::read_bounded_bytes(&file.path, MAX_ACCOUNT_FILE_BYTES) {
        Ok(s) => Ok(s),
        Err(UntrustedFile::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => match file.named_by {
            NamedBy::Default { .. } => Ok(Vec::new()),
            _ => Err(AccountError::Missing { file: file.clone() }),
        },
        Err(UntrustedFile::Io { source, .. }) => Err(AccountError::Read { file: file.clone(), source }),
        Err(source) => Err(AccountError::NotAccounts { source, named_by: file.named_by.clone() }),
    }
}

/// A NIS compat line (`+`, `+name`, `-name`, `+@netgroup`, ...): it
/// names entries a directory service holds, not a local account.
fn is_nis_compat(line: &str) -> bool {
    line.starts_with('+') || line.starts_with('-')
}

/// `name:x:uid:gid:...` lines: the (name, id, primary gid) of each. NIS
/// compat lines are passed over: their accounts are not in the file (as
/// with SSSD's, paddock does not see them).
fn parse_accounts(file: &AccountFile, text: &[u8]) -> Result<Vec<(String, u32, u32)>, AccountError> {
    let mut out = Vec::new();
    for (i, line) in lines(text).enumerate() {
        if line.trim().is_empty() || line.starts_with('#') || is_nis_compat(&line) {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let bad = || AccountError::Passwd { file: file.clone(), line: i + 1 };
        let id: u32 = f.get(2).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let gid: u32 = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(id);
        out.push((f[0].to_owned(), id, gid));
    }
    Ok(out)
}

/// The lines of an account file, as text: a byte that is not UTF-8 (in a
/// comment field, say) is read as U+FFFD, which no id or name paddock
/// looks for holds.
fn lines(text: &[u8]) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    text.split(|b| *b == b'\n').map(|line| String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)))
}

/// Where the first NIS compat line of `text` begins, if it has one.
fn nis_start(text: &[u8]) -> Option<usize> {
    let mut at = 0;
    for l in text.split_inclusive(|b| *b == b'\n') {
        if l.starts_with(b"+") || l.starts_with(b"-") {
            return Some(at);
        }
        at += l.len();
    }
    None
}

/// Adds `line` to an account file, replaced atomically: at the end, or in
/// passwd and group (`before_nis`) before the first NIS compat line when
/// there is one, as useradd does, so that the local entry is found first.
fn add_line(path: &Path, text: &[u8], line: &str, before_nis: bool) -> Result<(), AccountError> {
    let line = format!("{line}\n");
    let new = match nis_start(text).filter(|_| before_nis) {
        Some(at) => [&text[..at], line.as_bytes(), &text[at..]].concat(),
        None if text.is_empty() || text.ends_with(b"\n") => [text, line.as_bytes()].concat(),
        None => [text, b"\n", line.as_bytes()].concat(),
    };
    write_atomic(path, &new, 0o644).map_err(|source| AccountError::Write { path: path.to_owned(), source })
}

/// How long paddock waits for the account files' locks (`AccountLock`),
/// as lckpwdf waits.
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// Finds the remap user's ranges, each of at least one slice of
/// `slice_size` ids. For the default user, creates the user and its
/// ranges when they are missing; for any other user, missing ones are an
/// error (paddock does not change other accounts).
pub fn remap_ranges(files: &AccountFiles, configured: &str, slice_size: u32) -> Result<RemapRanges, AccountError> {
    ranges_waiting(files, configured, slice_size, LOCK_WAIT)
}

/// The remap user's ranges as the files say now, read only: `None` when
/// the user or a range is missing (which `remap_ranges` would add for the
/// default user, and which only a daemon's start or a `paddock run` adds).
pub fn read_remap_ranges(
    files: &AccountFiles,
    configured: &str,
    slice_size: u32,
) -> Result<Option<RemapRanges>, AccountError> {
    find_or_add(files, configured, slice_size, None)
}

/// `remap_ranges`, waiting at most `wait` for the account files' locks.
/// They are taken only when something is to be added, and then every
/// file is read again under them: a useradd that finished meanwhile is
/// seen, and none running can lose its edit to ours or ours to its.
fn ranges_waiting(
    files: &AccountFiles,
    configured: &str,
    slice_size: u32,
    wait: Duration,
) -> Result<RemapRanges, AccountError> {
    let mut lock = None;
    loop {
        if let Some(found) = find_or_add(files, configured, slice_size, lock.as_ref())? {
            return Ok(found);
        }
        lock = Some(AccountLock::take(files, wait)?);
    }
}

/// The ranges; `None` when something is to be added and `lock` (the
/// account files' locks, needed to add it) is not held.
fn find_or_add(
    files: &AccountFiles,
    configured: &str,
    slice_size: u32,
    lock: Option<&AccountLock>,
) -> Result<Option<RemapRanges>, AccountError> {
    let create = configured == "default";
    let user = if create { DEFAULT_REMAP_USER } else { configured };

    let passwd_text = read_optional(&files.passwd)?;
    let accounts = parse_accounts(&files.passwd, &passwd_text)?;
    // Every file read and checked before anything is added: a user added,
    // then a bad line found, would be half a change.
    let parse = |file: &AccountFile| -> Result<(Vec<u8>, Vec<SubIdEntry>), AccountError> {
        let text = read_optional(file)?;
        let entries = subid::parse(&String::from_utf8_lossy(&text))
            .map_err(|source| AccountError::Parse { file: file.clone(), source })?;
        Ok((text, entries))
    };
    let (uid_text, uid_entries) = parse(&files.subuid)?;
    let (gid_text, gid_entries) = parse(&files.subgid)?;
    // Root in a workload is never root on the host, whatever the files
    // say; and every range holds one slice at least (manifests are checked
    // against the slice's size). Of the user's lines, by its name or `uid`.
    let check = |uid: u32| -> Result<(), AccountError> {
        for (entries, file) in [(&uid_entries, &files.subuid), (&gid_entries, &files.subgid)] {
            if let Some(root) = subid::entries_of(entries, user, uid).find(|e| e.range.start == 0 && e.range.count > 0)
            {
                return Err(AccountError::HostRoot {
                    user: user.to_owned(),
                    path: file.path.clone(),
                    count: root.range.count,
                });
            }
        }
        for (entries, file) in [(&uid_entries, &files.subuid), (&gid_entries, &files.subgid)] {
            if let Some(short) = subid::entries_of(entries, user, uid).find(|e| e.range.count < slice_size) {
                let (line, range) = (short.line, short.range);
                return Err(AccountError::ShortRange {
                    file: file.clone(),
                    line,
                    user: user.to_owned(),
                    range,
                    slice_size,
                });
            }
        }
        Ok(())
    };
    let uid = match accounts.iter().find(|(n, _, _)| n == user) {
        Some((_, uid, _)) => *uid,
        // Checked with the id it would be given, before it is.
        None if create => {
            let id = system_id(files, user, &accounts)?;
            check(id)?;
            if lock.is_none() {
                return Ok(None);
            }
            create_system_user(files, user, id, &passwd_text)?
        }
        None => return Err(AccountError::NoSuchUser { user: user.to_owned(), path: files.passwd.path.clone() }),
    };
    check(uid)?;
    let mut uids = subid::ranges_of(&uid_entries, user, uid);
    let mut gids = subid::ranges_of(&gid_entries, user, uid);
    if create && (uids.is_empty() || gids.is_empty()) {
        if lock.is_none() {
            return Ok(None);
        }
        // Not over a host account's id: a workload would run as that user.
        // (A group line without a number, a NIS `+` line say, adds nothing.)
        let group_text = read_optional(&files.group)?;
        let group_ids = lines(&group_text).filter_map(|line| line.split(':').nth(2)?.parse::<u32>().ok());
        let ids: Vec<u32> = accounts.iter().flat_map(|(_, uid, gid)| [*uid, *gid]).chain(group_ids).collect();
        // One slice at least, should a slice be larger than the range.
        let count = NEW_RANGE_SIZE.max(slice_size);
        let start = subid::free_start(&[&uid_entries, &gid_entries], &ids, count).ok_or_else(|| {
            AccountError::NoFreeRange { count, subuid: files.subuid.path.clone(), subgid: files.subgid.path.clone() }
        })?;
        let range = IdRange { start, count };
        let line = format!("{user}:{start}:{count}");
        if uids.is_empty() {
            add_line(&files.subuid.path, &uid_text, &line, false)?;
            uids.push(range);
        }
        if gids.is_empty() {
            add_line(&files.subgid.path, &gid_text, &line, false)?;
            gids.push(range);
        }
    }
    if uids.is_empty() {
        return Err(AccountError::NoRanges { user: user.to_owned(), path: files.subuid.path.clone() });
    }
    if gids.is_empty() {
        return Err(AccountError::NoRanges { user: user.to_owned(), path: files.subgid.path.clone() });
    }
    Ok(Some(RemapRanges { user: user.to_owned(), uids, gids }))
}

/// Warnings for the host accounts (users of passwd, groups of group)
/// whose id lies in one of the remap user's ranges: a workload given that
/// id runs as that account on the host (it owns its files), which is not
/// root but is not what a remapped workload should be either. Each names
/// a range of the same size that no subordinate range and no local
/// account uses now. Not an error: such a range may have served for
/// years; the daemon says so at its start. Accounts the files do not list
/// (LDAP, sssd) are not seen; unreadable files give no warning.
pub fn account_overlaps(files: &AccountFiles, ranges: &RemapRanges) -> Vec<String> {
    let holds = |ranges: &[IdRange], id: u32| ranges.iter().any(|r| r.start <= id && u64::from(id) < r.end());
    let user = &ranges.user;
    let mut found = Vec::new();
    let mut ids = Vec::new();
    let passwd = read_optional(&files.passwd).unwrap_or_default();
    let accounts = parse_accounts(&files.passwd, &passwd).unwrap_or_default();
    for (name, uid, gid) in accounts.iter().cloned() {
        ids.extend([uid, gid]);
        if name != *user && holds(&ranges.uids, uid) {
            found.push(format!("uid {uid} (user {name}) lies in {user}'s subordinate uids"));
        }
    }
    let group = read_optional(&files.group).unwrap_or_default();
    for line in lines(&group).filter(|l| !l.starts_with('#') && !is_nis_compat(l)) {
        let mut f = line.split(':');
        let (Some(name), Some(gid)) = (f.next(), f.nth(1).and_then(|g| g.parse::<u32>().ok())) else { continue };
        ids.push(gid);
        if name != *user && holds(&ranges.gids, gid) {
            found.push(format!("gid {gid} (group {name}) lies in {user}'s subordinate gids"));
        }
    }
    const RUNS_AS: &str = "a workload given that id runs as that account on the host and owns its files";
    let mut found: Vec<(String, &str)> = found.into_iter().map(|f| (f, RUNS_AS)).collect();
    let entries = |file: &AccountFile| {
        subid::parse(&String::from_utf8_lossy(&read_optional(file).unwrap_or_default())).unwrap_or_default()
    };
    let (uid_entries, gid_entries) = (entries(&files.subuid), entries(&files.subgid));
    // Another user's subordinate range over the remap user's: its rootless
    // containers (or another paddock's workloads) share host ids with these.
    let own_uid = accounts.iter().find(|(n, _, _)| n == user).map(|(_, uid, _)| uid.to_string());
    for (entries, ours, kind) in [(&uid_entries, &ranges.uids, "uids"), (&gid_entries, &ranges.gids, "gids")] {
        for e in entries.iter().filter(|e| e.owner != *user && Some(&e.owner) != own_uid.as_ref()) {
            if ours.iter().any(|r| r.overlaps(&e.range)) {
                found.push((
                    format!("{}'s subordinate {kind} {} overlap {user}'s", e.owner, e.range),
                    "a workload given those ids shares them with that user's containers, which can then reach its processes and files",
                ));
            }
        }
    }
    if found.is_empty() {
        return Vec::new();
    }
    // Lines of the user that repeat each other may add up past 2^32.
    let total = |ranges: &[IdRange]| ranges.iter().map(|r| r.count).fold(0u32, u32::saturating_add);
    let count = total(&ranges.uids).max(total(&ranges.gids));
    let instead = match subid::free_start(&[&uid_entries, &gid_entries], &ids, count) {
        Some(start) => format!(
            "give {user} a range that holds no account's id and no other user's range instead: `{user}:{start}:{count}` (free now) in place of its lines in {} and {} (each workload then gets new ids; files its volumes hold keep the old owners)",
            files.subuid.display(),
            files.subgid.display()
        ),
        None => format!(
            "give {user} a range that holds no account's id and no other user's range instead (none of {count} ids is free now)"
        ),
    };
    found.into_iter().map(|(overlap, meaning)| format!("{overlap}: {meaning}; {instead}")).collect()
}

/// The locks shadow-utils' tools (useradd, usermod, vipw) take before they
/// change an account file, taken the same way, so that neither side loses
/// the other's edit: lckpwdf's, a write lock on `.pwd.lock` beside passwd
/// (taken by hand: musl's lckpwdf takes none), then each file's own
/// `FILE.lock`, a hard link to a file holding the holder's pid (link(2)
/// fails when it exists; one whose process is gone is stale, and
/// removed). Released when dropped.
struct AccountLock {
    /// Holds lckpwdf's lock while open.
    _pwd: std::fs::File,
    held: Vec<PathBuf>,
}

/// How often a held lock is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(50);

impl AccountLock {
    fn take(files: &AccountFiles, wait: Duration) -> Result<Self, AccountError> {
        let deadline = Instant::now() + wait;
        let path = files.passwd.path.parent().unwrap_or(Path::new("/")).join(".pwd.lock");
        let write_err = |path: &Path, source: std::io::Error| AccountError::Write { path: path.to_owned(), source };
        let pwd = open_lock(&path, false)?;
        // An open file description's lock: glibc's lckpwdf (a process's
        // lock) conflicts with it, and no other descriptor of ours drops it.
        let whole = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        loop {
            match nix::fcntl::fcntl(&pwd, nix::fcntl::FcntlArg::F_OFD_SETLK(&whole)) {
                Ok(_) => break,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) if Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                    return Err(AccountError::PwdLocked { path, waited: wait });
                }
                Err(e) => return Err(write_err(&path, e.into())),
            }
        }
        let mut lock = AccountLock { _pwd: pwd, held: Vec::new() };
        // On an error, the ones already held are released as `lock` drops.
        for file in [&files.passwd.path, &files.group.path, &files.subuid.path, &files.subgid.path] {
            lock.lock_file(file, deadline, wait)?;
        }
        Ok(lock)
    }

    /// `FILE.lock`, as shadow-utils' commonio makes it.
    fn lock_file(&mut self, file: &Path, deadline: Instant, wait: Duration) -> Result<(), AccountError> {
        let beside = |suffix: &str| {
            let mut name = file.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let pid = std::process::id();
        let (lock, mine) = (beside(".lock"), beside(&format!(".{pid}")));
        let write_err = |path: &Path, source: std::io::Error| AccountError::Write { path: path.to_owned(), source };
        let mut made = open_lock(&mine, true)?;
        let linked = std::io::Write::write_all(&mut made, pid.to_string().as_bytes())
            .map_err(|e| write_err(&mine, e))
            .and_then(|()| link_lock(&mine, &lock, deadline, wait));
        let _ = std::fs::remove_file(&mine);
        linked?;
        self.held.push(lock);
        Ok(())
    }
}

/// Takes `lock` by linking `mine` (holding our pid) to it, as commonio
/// does; a lock whose holder is gone is cleared, and one held by a live
/// process is waited for until `deadline`.
fn link_lock(mine: &Path, lock: &Path, deadline: Instant, wait: Duration) -> Result<(), AccountError> {
    let write_err = |source: std::io::Error| AccountError::Write { path: lock.to_owned(), source };
    loop {
        match std::fs::hard_link(mine, lock) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(write_err(e)),
        }
        let holder = lock_holder(lock);
        // Stale: its holder ended without removing it, or it names this
        // process, which holds none (a pid reused since a holder that died).
        let stale = holder.filter(|pid| *pid > 0).is_some_and(|pid| {
            pid as u32 == std::process::id()
                || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
        });
        match stale.then(|| std::fs::remove_file(lock)) {
            // Cleared (by us, or by another who found it stale too): try again.
            Some(Ok(())) => {}
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Some(Err(e)) => return Err(write_err(e)),
            None if Instant::now() < deadline => std::thread::sleep(LOCK_RETRY),
            None => return Err(AccountError::Locked { path: lock.to_owned(), holder, waited: wait }),
        }
    }
}

/// The pid a lock file names. Read as a small regular file only, never
/// through a link nor waiting on a FIFO: anything else names no one (and
/// is waited out as a live holder's lock would be).
fn lock_holder(lock: &Path) -> Option<i32> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(lock)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    // shadow-utils writes the pid with its C string's NUL.
    text.trim_matches(|c: char| c == '\0' || c.is_whitespace()).parse().ok()
}

/// A lock file, root's alone (0600), opened for writing (emptied with
/// `truncate`), never through a link.
fn open_lock(path: &Path, truncate: bool) -> Result<std::fs::File, AccountError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| AccountError::Write { path: path.to_owned(), source })
}

impl Drop for AccountLock {
    fn drop(&mut self) {
        for lock in self.held.drain(..).rev() {
            let _ = std::fs::remove_file(lock);
        }
    }
}

/// Adds a system user and its group (no home, no login shell, no password),
/// with the highest free id below 1000, as `useradd --system` picks.
/// The id a new system user gets (`create_system_user`): the highest
/// below 1000 (from 100) that no user and no group has, as useradd
/// --system chooses.
fn system_id(files: &AccountFiles, user: &str, accounts: &[(String, u32, u32)]) -> Result<u32, AccountError> {
    let groups = parse_accounts(&files.group, &read_optional(&files.group)?)?;
    let free = |id: &u32| !accounts.iter().any(|(_, u, _)| u == id) && !groups.iter().any(|(_, g, _)| g == id);
    (100..1000).rev().find(free).ok_or_else(|| AccountError::NoSystemId {
        user: user.to_owned(),
        passwd: files.passwd.path.clone(),
        group: files.group.path.clone(),
    })
}

/// Adds `user` as a system user of id `id` (`system_id`'s, from the
/// files as read under the lock), with a group of that id unless a group
/// of its name exists.
fn create_system_user(files: &AccountFiles, user: &str, id: u32, passwd_text: &[u8]) -> Result<u32, AccountError> {
    let group_text = read_optional(&files.group)?;
    let groups = parse_accounts(&files.group, &group_text)?;
    let existing_group = groups.iter().find(|(n, _, _)| n == user).map(|(_, gid, _)| *gid);
    let gid = match existing_group {
        Some(gid) => gid,
        None => {
            add_line(&files.group.path, &group_text, &format!("{user}:x:{id}:"), true)?;
            id
        }
    };
    // `*` in the password field: no password can match, and no shadow entry is needed.
    let line = format!("{user}:*:{id}:{gid}:paddock user-namespace remap:/nonexistent:/usr/sbin/nologin");
    add_line(&files.passwd.path, passwd_text, &line, true)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four files, named by the configuration, each empty.
    fn files(dir: &Path) -> AccountFiles {
        let file = |key| {
            std::fs::write(dir.join(key), "").unwrap();
            AccountFile { path: dir.join(key), named_by: NamedBy::Config { key, at: None } }
        };
        AccountFiles { passwd: file("passwd"), group: file("group"), subuid: file("subuid"), subgid: file("subgid") }
    }

    #[test]
    fn an_account_file_that_is_a_fifo_or_a_device_is_refused_not_read() {
        // Named in the configuration (remap.subuid = "/run/x.fifo"): the
        // open blocked for good, with the daemon's SIGTERM blocked too; a
        // device such as /dev/zero was read until memory ran out.
        let dir = tempfile::tempdir().unwrap();
        let mut f = files(dir.path());
        std::fs::write(&f.passwd.path, "root:x:0:0:root:/root:/bin/bash\npaddock:*:998:998::/:/bin/false\n").unwrap();
        std::fs::write(&f.group.path, "root:x:0:\n").unwrap();
        std::fs::write(&f.subgid.path, "paddock:100000:65536\n").unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for path in [dir.path().join("fifo"), PathBuf::from("/dev/zero")] {
            f.subuid.path = path.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let files = f.clone();
            std::thread::spawn(move || tx.send(read_remap_ranges(&files, "default", 65536).map_err(|e| e.to_string())));
            let result = rx.recv_timeout(Duration::from_secs(5)).expect("the read returns");
            let message = result.expect_err("refused");
            assert!(
                message.contains(&path.display().to_string()) && message.contains("not a regular file"),
                "{message}"
            );
        }
    }

    #[test]
    fn creates_the_default_user_and_a_non_overlapping_range() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "root:x:0:0:root:/root:/bin/bash\nsys:x:999:999::/:/bin/false\n").unwrap();
        std::fs::write(&f.group.path, "root:x:0:\n").unwrap();
        std::fs::write(&f.subuid.path, "alice:100000:65536\n").unwrap();
        std::fs::write(&f.subgid.path, "# keep me\nalice:100000:65536\nbob:165536:65536").unwrap();
        let ranges = remap_ranges(&f, "default", 65536).unwrap();
        assert_eq!(ranges.user, "paddock");
        assert_eq!(ranges.uids, [IdRange { start: 262144, count: NEW_RANGE_SIZE }]);
        assert_eq!(ranges.gids, ranges.uids);
        let passwd = std::fs::read_to_string(&f.passwd.path).unwrap();
        assert!(
            passwd.ends_with("paddock:*:998:998:paddock user-namespace remap:/nonexistent:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(std::fs::read_to_string(&f.group.path).unwrap().ends_with("paddock:x:998:\n"));
        assert_eq!(
            std::fs::read_to_string(&f.subgid.path).unwrap(),
            "# keep me\nalice:100000:65536\nbob:165536:65536\npaddock:262144:16777216\n"
        );
        // The second time, nothing changes.
        let before = std::fs::read_to_string(&f.passwd.path).unwrap();
        assert_eq!(remap_ranges(&f, "default", 65536).unwrap(), ranges);
        assert_eq!(std::fs::read_to_string(&f.passwd.path).unwrap(), before);
    }

    /// A passwd or group line that is not UTF-8 (a Latin-1 name in the
    /// comment field, which any user may write into their own with chfn)
    /// is an account like any other: not a reason to refuse the files,
    /// which stopped the daemon from starting at all, and kept as it is,
    /// byte for byte, when paddock adds its user.
    #[test]
    fn account_lines_that_are_not_utf8_are_read_and_kept_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let passwd = b"root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice,\xe9tage 3,,:/home/alice:/bin/sh\n";
        let group = b"root:x:0:\nb\xe9b:x:1000:\n";
        std::fs::write(&f.passwd.path, passwd).unwrap();
        std::fs::write(&f.group.path, group).unwrap();
        let ranges = remap_ranges(&f, "default", 65536).unwrap();
        assert_eq!(ranges.user, "paddock");
        let line = b"paddock:*:999:999:paddock user-namespace remap:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(std::fs::read(&f.passwd.path).unwrap(), [passwd.as_slice(), line].concat());
        assert_eq!(std::fs::read(&f.group.path).unwrap(), [group.as_slice(), b"paddock:x:999:\n"].concat());
        assert_eq!(read_remap_ranges(&f, "default", 65536).unwrap(), Some(ranges.clone()));
        assert_eq!(account_overlaps(&f, &ranges), Vec::<String>::new());
    }

    #[test]
    fn a_range_holding_id_0_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "root:x:0:0:root:/root:/bin/bash\nops:x:999:999::/:/bin/false\n").unwrap();
        std::fs::write(&f.group.path, "root:x:0:\n").unwrap();
        for (uids, gids, refused) in [
            ("ops:0:65536\n", "ops:100000:65536\n", &f.subuid.path),
            ("ops:100000:65536\n", "ops:200000:65536\nops:0:1\n", &f.subgid.path),
        ] {
            std::fs::write(&f.subuid.path, uids).unwrap();
            std::fs::write(&f.subgid.path, gids).unwrap();
            let err = remap_ranges(&f, "ops", 65536).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{}: `ops:0:", refused.display())), "{err}");
            assert!(err.contains("onto id 0, the host's root"), "{err}");
        }
        std::fs::write(&f.subgid.path, "ops:100000:65536\n").unwrap();
        assert!(remap_ranges(&f, "ops", 65536).is_ok());
    }

    #[test]
    fn host_accounts_inside_the_ranges_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(
            &f.passwd.path,
            "root:x:0:0:root:/root:/bin/bash\nops:x:999:999::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(&f.group.path, "root:x:0:\nops:x:999:\nalice:x:1000:\nlate:x:70000:\n+:::\n").unwrap();
        std::fs::write(&f.subuid.path, "ops:900:65536\n").unwrap();
        std::fs::write(&f.subgid.path, "ops:1000:70000\n").unwrap();
        let ranges = remap_ranges(&f, "ops", 65536).unwrap();
        let warnings = account_overlaps(&f, &ranges);
        let named: Vec<&str> = warnings.iter().map(|w| w.split(':').next().unwrap()).collect();
        assert_eq!(
            named,
            [
                "uid 1000 (user alice) lies in ops's subordinate uids",
                "gid 1000 (group alice) lies in ops's subordinate gids",
                "gid 70000 (group late) lies in ops's subordinate gids",
            ],
            "the remap user's own ids are not named"
        );
        // A range of the same size (70000 ids, the larger) clear of every
        // range and account: 131072, the first aligned start past 71000.
        assert!(warnings[0].ends_with(&format!(
            "runs as that account on the host and owns its files; give ops a range that holds no account's id and no other user's range instead: `ops:131072:70000` (free now) in place of its lines in {} and {} (each workload then gets new ids; files its volumes hold keep the old owners)",
            f.subuid.path.display(),
            f.subgid.path.display()
        )), "{}", warnings[0]);
        std::fs::write(&f.subuid.path, "ops:100000:65536\n").unwrap();
        std::fs::write(&f.subgid.path, "ops:100000:65536\n").unwrap();
        assert!(account_overlaps(&f, &remap_ranges(&f, "ops", 65536).unwrap()).is_empty());
        // Another user's subordinate range over ops's (its own lines, by
        // name or uid, are not named).
        std::fs::write(&f.subuid.path, "ops:100000:65536\nalice:150000:65536\n999:165536:65536\n").unwrap();
        let warnings = account_overlaps(&f, &remap_ranges(&f, "ops", 65536).unwrap());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("alice's subordinate uids 150000-215535 overlap ops's: a workload given those ids shares them with that user's containers"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("instead: `ops:262144:131072`"), "{}", warnings[0]);
        // Lines that repeat each other, adding up past 2^32 ids: no range
        // that large is free, and that is said (no overflow).
        std::fs::write(&f.subuid.path, "ops:900:4000000000\nops:900:4000000000\n").unwrap();
        let warnings = account_overlaps(&f, &remap_ranges(&f, "ops", 65536).unwrap());
        assert!(warnings[0].ends_with("(none of 4294967295 ids is free now)"), "{}", warnings[0]);
    }

    /// What is in `dir` besides the four account files (lock files left
    /// behind, our pid's temporary files).
    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["passwd", "group", "subuid", "subgid", ".pwd.lock"].contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_lock_names_its_holder_only_as_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        std::fs::write(p("file"), "4242\0").unwrap();
        assert_eq!(lock_holder(&p("file")), Some(4242));
        std::os::unix::fs::symlink(p("file"), p("link")).unwrap();
        assert_eq!(lock_holder(&p("link")), None, "read through a link");
        // Opened blocking, a FIFO with no writer would hang this test.
        nix::unistd::mkfifo(&p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(lock_holder(&p("fifo")), None);
        std::fs::write(p("long"), format!("{}1", " ".repeat(40))).unwrap();
        assert_eq!(lock_holder(&p("long")), None, "read past 32 bytes");
    }

    #[test]
    fn adding_the_user_waits_for_the_locks_shadow_utils_takes_and_clears_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let wait = Duration::from_millis(300);
        // A running useradd's passwd.lock, its pid written as shadow-utils
        // writes it (with the C string's NUL).
        let mut useradd = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(dir.path().join("passwd.lock"), format!("{}\0", useradd.id())).unwrap();
        let e = ranges_waiting(&f, "default", 65536, wait).unwrap_err();
        useradd.kill().unwrap();
        assert!(matches!(&e, AccountError::Locked { holder: Some(pid), .. } if *pid == useradd.id() as i32), "{e}");
        assert!(e.to_string().contains("passwd.lock is held by process"), "{e}");
        assert_eq!(std::fs::read_to_string(&f.passwd.path).unwrap(), "root:x:0:0:root:/root:/bin/bash\n");
        assert_eq!(leftovers(dir.path()), ["passwd.lock"], "only the tool's own lock");
        // One whose process is gone is stale: cleared, and the user added.
        useradd.wait().unwrap();
        std::fs::write(dir.path().join("passwd.lock"), format!("{}\0", useradd.id())).unwrap();
        let ranges = ranges_waiting(&f, "default", 65536, wait).unwrap();
        assert!(std::fs::read_to_string(&f.passwd.path).unwrap().contains("paddock:*:999:999:"));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "every lock released");

        // lckpwdf's lock, held by another tool: waited for, then taken.
        std::fs::create_dir(dir.path().join("other")).unwrap();
        let other = files(&dir.path().join("other"));
        let pwd = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("other/.pwd.lock"))
            .unwrap();
        let whole =
            libc::flock { l_type: libc::F_WRLCK as _, l_whence: libc::SEEK_SET as _, l_start: 0, l_len: 0, l_pid: 0 };
        nix::fcntl::fcntl(&pwd, nix::fcntl::FcntlArg::F_OFD_SETLK(&whole)).unwrap();
        let e = ranges_waiting(&other, "default", 65536, wait).unwrap_err();
        assert!(matches!(e, AccountError::PwdLocked { .. }), "{e}");
        assert!(e.to_string().contains("removing the file releases nothing"), "{e}");
        assert_eq!(std::fs::read_to_string(&other.passwd.path).unwrap(), "", "nothing written while it was held");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(pwd);
        });
        assert_eq!(ranges_waiting(&other, "default", 65536, Duration::from_secs(10)).unwrap().uids, ranges.uids);
        release.join().unwrap();

        // One naming this process, which holds none (its pid reused since
        // a holder died): stale too.
        std::fs::create_dir(dir.path().join("third")).unwrap();
        let third = files(&dir.path().join("third"));
        std::fs::write(dir.path().join("third/group.lock"), std::process::id().to_string()).unwrap();
        assert_eq!(ranges_waiting(&third, "default", 65536, wait).unwrap().uids, ranges.uids);
        assert_eq!(leftovers(&dir.path().join("third")), Vec::<String>::new());

        // The user there already: nothing is locked (an /etc that cannot be
        // written, with the user made when the image was, still works):
        // a live tool's lock is neither waited for nor touched.
        let mut useradd = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let held = format!("{}\0", useradd.id());
        std::fs::write(dir.path().join("passwd.lock"), &held).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(ranges_waiting(&f, "default", 65536, Duration::from_secs(10)).unwrap(), ranges);
        assert!(started.elapsed() < Duration::from_secs(5), "it waited for the lock");
        assert_eq!(std::fs::read_to_string(dir.path().join("passwd.lock")).unwrap(), held);
        useradd.kill().unwrap();
        useradd.wait().unwrap();
    }

    #[test]
    fn a_new_range_covers_no_host_account_by_uid_primary_gid_or_group() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        // Past a user at 200000 and a group at 300000, and past a primary
        // gid of 16900000.
        for (account, ids, start) in [
            ("alice:x:200000:100::/:/bin/false\n", &[200_000, 300_000][..], 327_680),
            ("alice:x:1000:16900000::/:/bin/false\n", &[300_000, 16_900_000][..], 16_908_288),
        ] {
            std::fs::write(&f.passwd.path, format!("root:x:0:0:root:/root:/bin/bash\n{account}")).unwrap();
            std::fs::write(&f.group.path, "root:x:0:\nbig:x:300000:\n").unwrap();
            std::fs::write(&f.subuid.path, "").unwrap();
            std::fs::write(&f.subgid.path, "").unwrap();
            let range = remap_ranges(&f, "default", 65536).unwrap().uids[0];
            for &id in ids {
                assert!(!(u64::from(range.start)..range.end()).contains(&id), "{account}: {range:?} covers {id}");
            }
            assert_eq!(range.start, start, "{account}");
        }
    }

    #[test]
    fn a_group_line_without_a_number_is_passed_over_and_the_others_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        // The remap user exists: only its new range reads the group file.
        std::fs::write(&f.passwd.path, "root:x:0:0:root:/root:/bin/bash\npaddock:*:998:998::/:/bin/false\n").unwrap();
        // A NIS include and a broken line before a group at 300000.
        std::fs::write(&f.group.path, "root:x:0:\npaddock:x:998:\n+\nbroken:x:many:\nbig:x:300000:\n").unwrap();
        std::fs::write(&f.subuid.path, "").unwrap();
        std::fs::write(&f.subgid.path, "").unwrap();
        let range = remap_ranges(&f, "default", 65536).unwrap().uids[0];
        assert_eq!(range.start, 327_680, "{range:?}: the range starts past the group at 300000");
    }

    #[test]
    fn nis_compat_lines_are_not_accounts_and_a_new_account_goes_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let passwd = "root:x:0:0:root:/root:/bin/bash\n+alice::::::\n-bob\n+@ops::::::\n+::::::\n";
        let group = "root:x:0:\n+:::\n";
        std::fs::write(&f.passwd.path, passwd).unwrap();
        std::fs::write(&f.group.path, group).unwrap();
        let ranges = remap_ranges(&f, "default", 65536).unwrap();
        assert_eq!(ranges.uids, [IdRange { start: 131_072, count: NEW_RANGE_SIZE }]);
        let line = "paddock:*:999:999:paddock user-namespace remap:/nonexistent:/usr/sbin/nologin";
        assert_eq!(
            std::fs::read_to_string(&f.passwd.path).unwrap(),
            format!("root:x:0:0:root:/root:/bin/bash\n{line}\n+alice::::::\n-bob\n+@ops::::::\n+::::::\n")
        );
        assert_eq!(std::fs::read_to_string(&f.group.path).unwrap(), "root:x:0:\npaddock:x:999:\n+:::\n");
        // Found again among them, and nothing changes.
        let before = std::fs::read_to_string(&f.passwd.path).unwrap();
        assert_eq!(remap_ranges(&f, "default", 65536).unwrap(), ranges);
        assert_eq!(std::fs::read_to_string(&f.passwd.path).unwrap(), before);
        // A file that is all NIS lines: the new line goes first.
        std::fs::write(&f.passwd.path, "+::::::\n").unwrap();
        std::fs::write(&f.group.path, "+:::").unwrap();
        std::fs::write(&f.subuid.path, "").unwrap();
        std::fs::write(&f.subgid.path, "").unwrap();
        remap_ranges(&f, "default", 65536).unwrap();
        assert_eq!(std::fs::read_to_string(&f.passwd.path).unwrap(), format!("{line}\n+::::::\n"));
        assert_eq!(std::fs::read_to_string(&f.group.path).unwrap(), "paddock:x:999:\n+:::");
        // An exclusion first, local lines after the NIS block: before the exclusion.
        std::fs::write(&f.passwd.path, "root:x:0:0::/:/bin/sh\n-bob\n+::::::\nlocal:x:5:5::/:/bin/sh\n").unwrap();
        std::fs::write(&f.group.path, "root:x:0:\n-bob\nlocal:x:5:\n").unwrap();
        std::fs::write(&f.subuid.path, "").unwrap();
        std::fs::write(&f.subgid.path, "").unwrap();
        remap_ranges(&f, "default", 65536).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f.passwd.path).unwrap(),
            format!("root:x:0:0::/:/bin/sh\n{line}\n-bob\n+::::::\nlocal:x:5:5::/:/bin/sh\n")
        );
        assert_eq!(std::fs::read_to_string(&f.group.path).unwrap(), "root:x:0:\npaddock:x:999:\n-bob\nlocal:x:5:\n");
    }

    #[test]
    fn honours_every_range_line_of_a_named_user() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "ops:x:1000:1000::/home/ops:/bin/sh\n").unwrap();
        std::fs::write(&f.subuid.path, "ops:200000:65536\n1000:400000:131072\n").unwrap();
        std::fs::write(&f.subgid.path, "ops:200000:65536\n").unwrap();
        let r = remap_ranges(&f, "ops", 65536).unwrap();
        assert_eq!(r.uids.len(), 2);
        assert_eq!(r.gids.len(), 1);
        let err = remap_ranges(&f, "nobody-here", 65536).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    /// A byte-order mark before the user's line: refused, and nothing is
    /// added (passed over, the user had no range, and got a new one).
    #[test]
    fn a_byte_order_mark_before_the_users_line_is_refused_and_nothing_added() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "paddock:*:998:998::/:/x\n").unwrap();
        std::fs::write(&f.subuid.path, "\u{feff}paddock:100000:65536\n").unwrap();
        std::fs::write(&f.subgid.path, "paddock:100000:65536\n").unwrap();
        let err = remap_ranges(&f, "default", 65536).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:1: the line begins with a byte-order mark", f.subuid.path.display())),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&f.subuid.path).unwrap(), "\u{feff}paddock:100000:65536\n");
    }

    /// A file the configuration (or a flag) names that does not exist is
    /// refused, and nothing is created: a typo there made paddock write a
    /// new file with its user and a range picked away from that file's
    /// ranges alone, not the host's. The default's missing counts as empty.
    #[test]
    fn a_named_account_file_that_does_not_exist_is_refused_and_nothing_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = files(dir.path());
        std::fs::write(&f.passwd.path, "root:x:0:0::/:/bin/sh\n").unwrap();
        f.subuid.path = dir.path().join("subuids");
        let err = remap_ranges(&f, "default", 65536).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{} does not exist (named by `[remap] subuid` in the configuration); name the file you meant there",
                f.subuid.path.display()
            )),
            "{err}"
        );
        assert!(!f.subuid.path.exists(), "not created");
        assert_eq!(std::fs::read_to_string(&f.passwd.path).unwrap(), "root:x:0:0::/:/bin/sh\n", "no user added");
        f.subuid.named_by = NamedBy::Flag { flag: "--subuid", key: "subuid" };
        assert!(remap_ranges(&f, "default", 65536).unwrap_err().to_string().contains("(named by --subuid)"));
        // The default's: created, with the user's range.
        f.subuid.named_by = NamedBy::Default { key: "subuid", config: dir.path().join("paddock.toml") };
        assert_eq!(remap_ranges(&f, "default", 65536).unwrap().uids.len(), 1);
        assert!(std::fs::read_to_string(&f.subuid.path).unwrap().starts_with("paddock:"));
    }

    /// The default user missing and a range file it would be given a line
    /// in that cannot be read: refused before anything is added (the user
    /// was added to passwd and group first, then the line refused), and
    /// refused too by the read-only look `--validate` takes (it returned
    /// "to be added" without reading the range files).
    #[test]
    fn a_bad_range_line_is_refused_before_the_default_user_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "root:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::write(&f.group.path, "root:x:0:\n").unwrap();
        for (subuid, why) in [
            ("ops:100000\n", "expected `name:start:count`"),
            ("paddock:100000:1000\n", "fewer than a workload's slice"),
            ("paddock:0:65536\n", "the host's root"),
        ] {
            std::fs::write(&f.subuid.path, subuid).unwrap();
            let looked = read_remap_ranges(&f, "default", 65536).unwrap_err().to_string();
            assert!(looked.contains(why), "{looked}");
            let err = remap_ranges(&f, "default", 65536).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert_eq!(std::fs::read_to_string(&f.passwd.path).unwrap(), "root:x:0:0::/:/bin/sh\n", "{subuid}");
            assert_eq!(std::fs::read_to_string(&f.group.path).unwrap(), "root:x:0:\n", "{subuid}");
            assert_eq!(std::fs::read_to_string(&f.subuid.path).unwrap(), subuid);
        }
    }

    /// Every range of the user holds one slice at least: a shorter one is
    /// refused at its line (a workload given it would have fewer ids than
    /// its manifest was checked against), before anything is added.
    #[test]
    fn a_range_shorter_than_a_slice_is_refused_and_nothing_added() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "paddock:*:998:998::/:/x\n").unwrap();
        std::fs::write(&f.subuid.path, "paddock:100000:1000\n").unwrap();
        let err = remap_ranges(&f, "default", 65536).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}:1: paddock's range 100000:1000 holds 1000 ids, fewer than a workload's slice (slice_size = 65536)",
                f.subuid.path.display()
            )) && err.ends_with("or set slice_size to 1000 or less"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&f.subgid.path).unwrap(), "", "no range was added");
        assert_eq!(remap_ranges(&f, "default", 1000).unwrap().uids, [IdRange { start: 100000, count: 1000 }]);
        // A slice larger than the range paddock adds: the range is one slice.
        std::fs::write(&f.subuid.path, "").unwrap();
        std::fs::write(&f.subgid.path, "").unwrap();
        let big = NEW_RANGE_SIZE * 2;
        assert_eq!(remap_ranges(&f, "default", big).unwrap().uids[0].count, big);
    }

    #[test]
    fn a_bad_subuid_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(&f.passwd.path, "paddock:*:998:998::/:/x\n").unwrap();
        std::fs::write(&f.subuid.path, "paddock:100000:65536\npaddock:oops:1\n").unwrap();
        let err = remap_ranges(&f, "default", 65536).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: start \"oops\" is not a number from 0 to 4294967295 (named by `[remap] subuid` in the configuration); mend the line, or name another file there",
                f.subuid.path.display()
            )
        );
    }
}
