//! Watching the workloads directory with notify's inotify watcher: the
//! directory's target and its parent. A directory that is a symlink
//! swapped to a new target (as Kubernetes ConfigMaps do), or a directory
//! replaced whole (`mv wl.new wl`), changes nothing in the old target,
//! only in the parent; `rearm` then moves the watch to what the path is
//! now (and watches again a directory moved away and back, whose watch
//! notify dropped as it left). notify's thread only says "something changed" (a rescan compares
//! whole files), once per event batch, and nothing wakes while nothing
//! happens; the event loop debounces.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// What the watcher tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Something in the directory (or the directory's own entry) changed.
    Files,
    /// Events were lost (an inotify queue overflow) or the watcher failed:
    /// rescan everything.
    Lost,
    /// The directory is watched again after a spell unwatched: rescan
    /// everything (what changed between the last rescan and the watch).
    /// Not `Lost`, which the loop logs as a queue overflow.
    Rewatched,
}

pub struct Watch {
    /// None while it cannot watch (root's inotify instances or watches
    /// used up by others): tried again after each rescan.
    watcher: Option<RecommendedWatcher>,
    /// The watcher is there, but the directory's target could not be
    /// added to it (a moved target, root's watches used up): tried again
    /// at each rearm, the watcher and its parent's watch kept.
    target_unwatched: bool,
    dir: PathBuf,
    /// What `dir` resolves to, and its identity, as watched now.
    target: PathBuf,
    identity: (u64, u64),
    /// The parent saw the directory's entry change (moved away, back, or
    /// replaced): notify dropped the watch of a directory moved away, so
    /// `rearm` watches it again even when it is the same directory.
    entry_changed: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<Change>,
    pub changes: mpsc::UnboundedReceiver<Change>,
    /// What was seen of writes to the directory's files.
    pub writes: Arc<Writes>,
}

/// How long a file being written is read as it was before the write: a
/// writer that keeps it open longer has it read as it is then.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(2);

/// What the watcher saw of writes to the directory's files, by name:
/// whether one is being written (a write seen, or the file made empty,
/// and no close by its writer yet) and when it was last written to or
/// closed.
#[derive(Debug, Default)]
pub struct Writes(Mutex<BTreeMap<OsString, Seen>>);

#[derive(Debug, Clone, Copy)]
struct Seen {
    open: bool,
    last: Instant,
}

/// How long a closed file's last write is remembered (longer than any scan).
const REMEMBERED: Duration = Duration::from_secs(60);

impl Writes {
    fn seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<OsString, Seen>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The files a scan that began at `since` must not take as it read
    /// them: being written now (for up to WRITE_PATIENCE after their last
    /// write), or written to or closed since it began (it may have read
    /// them between two writes; their close brings another scan).
    pub fn withheld(&self, since: Instant) -> BTreeSet<String> {
        let now = Instant::now();
        let mut seen = self.seen();
        seen.retain(|_, s| now.saturating_duration_since(s.last) < REMEMBERED);
        seen.iter()
            .filter(|(_, s)| (s.open && now.saturating_duration_since(s.last) < WRITE_PATIENCE) || s.last >= since)
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect()
    }

    /// `name` is being written, as an open for writing shows it (tests).
    #[cfg(test)]
    pub fn being_written(&self, name: &str) {
        self.seen().insert(name.into(), Seen { open: true, last: Instant::now() });
    }

    /// When the first file being written now is to be read anyway.
    pub fn patience_ends(&self) -> Option<Instant> {
        self.seen().values().filter(|s| s.open).map(|s| s.last + WRITE_PATIENCE).min()
    }

    /// Takes in `event`: a file of the directory (not of its parent)
    /// written to, or made empty, is being written until its writer
    /// closes it, or it is removed or renamed away.
    fn note(&self, event: &notify::Event, parent: Option<&Path>) {
        // A file just made empty is about to be written; a link made to a
        // file with content (`ln`), a symlink or a FIFO is not being written.
        let made_empty = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
        let open = match event.kind {
            EventKind::Modify(ModifyKind::Data(_)) => true,
            EventKind::Create(CreateKind::File) if event.paths.iter().any(|p| made_empty(p)) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => false,
            _ => return,
        };
        let mut seen = self.seen();
        for path in &event.paths {
            // The parent's files (its configuration, the directory's own entry) are none of its.
            if parent.is_some() && path.parent() == parent {
                continue;
            }
            let Some(name) = path.file_name() else { continue };
            seen.insert(name.to_owned(), Seen { open, last: Instant::now() });
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("watching {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

impl Watch {
    /// Watches `dir`. Only a directory that cannot be resolved is an
    /// error: one that cannot be watched (root's inotify instances or
    /// watches used up by other processes) is logged, its changes seen by
    /// the periodic resync alone, and watched once it can be (`rearm`).
    /// A daemon that stopped at it would leave its workloads unsupervised,
    /// and a restart would not mend it.
    pub fn new(dir: &Path) -> Result<Self, WatchError> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| WatchError { path: dir.to_owned(), source };
        let target = std::fs::canonicalize(dir).map_err(|e| err(e.into()))?;
        let identity = identity(&target).map_err(|e| err(e.into()))?;
        let (tx, changes) = mpsc::unbounded_channel();
        let mut watch = Watch {
            watcher: None,
            target_unwatched: false,
            dir: dir.to_owned(),
            target,
            identity,
            entry_changed: Arc::new(AtomicBool::new(false)),
            tx,
            changes,
            writes: Arc::new(Writes::default()),
        };
        if let Err(error) = watch.arm() {
            tracing::error!(
                dir = %watch.target.display(),
                %error,
                "cannot watch the workloads directory: root's inotify instances (fs.inotify.max_user_instances) \
                 or watches (fs.inotify.max_user_watches) may be used up by other processes; raise the limit with \
                 sysctl or end what holds them. Until then only the periodic resync, SIGHUP and `paddock reload` \
                 see the directory's changes; it is tried again at each resync"
            );
        }
        Ok(watch)
    }

    /// Whether the directory is watched now.
    pub fn watching(&self) -> bool {
        self.watcher.is_some() && !self.target_unwatched
    }

    /// A new watcher of the target and of `dir`'s parent (for the
    /// directory's own entry), kept if both are watched.
    fn arm(&mut self) -> notify::Result<()> {
        let parent = self.dir.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned);
        let entry: Option<OsString> = self.dir.file_name().map(ToOwned::to_owned);
        let (tx, noted, entry_seen) = (self.tx.clone(), self.writes.clone(), self.entry_changed.clone());
        let parent_of_entry = parent.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = &event {
                noted.note(event, parent_of_entry.as_deref());
            }
            let change = match event {
                // The daemon's own reads of manifests: not a change; a
                // writer done with a file is one (it is read now).
                Ok(event)
                    if matches!(event.kind, EventKind::Access(_))
                        && !matches!(event.kind, EventKind::Access(AccessKind::Close(AccessMode::Write))) =>
                {
                    None
                }
                Ok(event) if event.need_rescan() => Some(Change::Lost),
                // In the parent only the directory's own entry matters (a
                // log, a socket or a configuration beside it does not).
                Ok(event) => {
                    let in_parent = |p: &PathBuf| p.parent().map(Path::to_owned) == parent_of_entry;
                    if event.paths.iter().any(|p| in_parent(p) && p.file_name().map(ToOwned::to_owned) == entry) {
                        entry_seen.store(true, Ordering::Relaxed);
                    }
                    event
                        .paths
                        .iter()
                        .any(|p| !in_parent(p) || p.file_name().map(ToOwned::to_owned) == entry)
                        .then_some(Change::Files)
                }
                Err(error) => {
                    tracing::warn!(%error, "watch error; rescanning everything");
                    Some(Change::Lost)
                }
            };
            if let Some(change) = change {
                let _ = tx.send(change);
            }
        };
        let mut watcher = notify::recommended_watcher(handler)?;
        watcher.watch(&self.target, RecursiveMode::NonRecursive)?;
        if let Some(parent) = &parent {
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
        self.watcher = Some(watcher);
        Ok(())
    }

    /// After a rescan: if the directory now resolves elsewhere (a swapped
    /// symlink) or is another directory (replaced whole), watch that; if
    /// it is the same directory moved away and back, watch it again; if
    /// it could not be watched, try again.
    pub fn rearm(&mut self) {
        let Ok(target) = std::fs::canonicalize(&self.dir) else { return };
        let Ok(identity) = identity(&target) else { return };
        let entry_changed = self.entry_changed.swap(false, Ordering::Relaxed);
        let moved = target != self.target || identity != self.identity;
        let old = std::mem::replace(&mut self.target, target);
        self.identity = identity;
        let Some(watcher) = &mut self.watcher else {
            if self.arm().is_ok() {
                tracing::info!(dir = %self.target.display(), "watching the workloads directory again");
                // What changed between the rescan and the watch.
                let _ = self.tx.send(Change::Rewatched);
            }
            return;
        };
        if !moved && !entry_changed && !self.target_unwatched {
            return;
        }
        if moved {
            // The old target may be gone already; its watch went with it.
            let _ = watcher.unwatch(&old);
        }
        match watcher.watch(&self.target, RecursiveMode::NonRecursive) {
            Ok(()) if std::mem::take(&mut self.target_unwatched) => {
                tracing::info!(dir = %self.target.display(), "watching the workloads directory again");
                let _ = self.tx.send(Change::Rewatched);
            }
            Ok(()) if moved => {
                tracing::info!(dir = %self.dir.display(), target = %self.target.display(), "the workloads directory was replaced; watching what it is now")
            }
            Ok(()) => {}
            Err(error) if !self.target_unwatched => {
                tracing::error!(dir = %self.target.display(), %error, "cannot watch the workloads directory; until it can be (tried again after each rescan), only the periodic resync sees its changes");
                self.target_unwatched = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{RemoveKind, RenameMode};

    use super::*;

    /// Every change `watch` reported until it has said nothing for 200 ms.
    fn quiet(watch: &mut Watch) -> Vec<Change> {
        let mut seen = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_millis(200) {
            match watch.changes.try_recv() {
                Ok(change) => {
                    seen.push(change);
                    last = Instant::now();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        seen
    }

    /// A directory moved away and back (`mv wl wl.old`, then `mv wl.old
    /// wl`) is the same directory, but its watch went when it left: it is
    /// watched again, or what is saved in it would be seen only by the
    /// periodic resync.
    #[test]
    fn a_directory_moved_away_and_back_is_watched_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wl");
        std::fs::create_dir(&dir).unwrap();
        let mut watch = Watch::new(&dir).unwrap();
        std::fs::rename(&dir, root.path().join("wl.old")).unwrap();
        assert!(!quiet(&mut watch).is_empty(), "the move is seen, in the parent");
        watch.rearm();
        std::fs::rename(root.path().join("wl.old"), &dir).unwrap();
        assert!(!quiet(&mut watch).is_empty(), "and the move back");
        watch.rearm();
        std::fs::write(dir.join("web.toml"), "command = [\"x\"]\n").unwrap();
        assert!(quiet(&mut watch).contains(&Change::Files), "a file saved in it is seen");
    }

    /// A directory that cannot be watched at the daemon's start (root's
    /// inotify instances used up by another process) is no error, which
    /// would leave the workloads unsupervised: it is watched at the first
    /// rearm (after a rescan) once it can be, which asks for a rescan of
    /// what changed meanwhile.
    #[test]
    fn a_directory_that_cannot_be_watched_yet_is_watched_once_it_can_be() {
        use std::os::unix::fs::PermissionsExt;
        assert!(nix::unistd::geteuid().is_root(), "this test changes its thread's effective uid and must run as root");
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wl");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The kernel counts inotify instances by effective uid, and the
        // raw setresuid changes one thread's: this thread alone acts as a
        // uid nothing else uses, and uses up its instances.
        const UID: libc::uid_t = 4_000_000_001;
        let watched = dir.clone();
        let acting = std::thread::spawn(move || {
            act_as(UID);
            let mut held = Vec::new();
            let used_up = loop {
                // SAFETY: inotify_init1 takes a flag and returns a new descriptor, owned here.
                let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
                if fd < 0 {
                    break std::io::Error::last_os_error();
                }
                // SAFETY: `fd` was just returned to us and is owned by nothing else.
                held.push(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
                assert!(held.len() < 1 << 20, "no limit to inotify instances");
            };
            assert_eq!(used_up.raw_os_error(), Some(libc::EMFILE), "{used_up}");
            let max = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances").unwrap();
            assert_eq!(held.len().to_string(), max.trim(), "the process's open-files limit was reached first");
            let watch = Watch::new(&watched);
            drop(held);
            let watch = watch.map(|mut watch| {
                let before = watch.watching();
                watch.rearm();
                (before, watch.watching(), watch)
            });
            act_as(0);
            watch
        });
        let (before, after, mut watch) =
            acting.join().unwrap().expect("a directory that cannot be watched is no error");
        assert!(!before, "watched with its user's inotify instances used up?");
        assert!(after, "not watched at the rearm after the instances were given back");
        assert!(quiet(&mut watch).contains(&Change::Rewatched), "watched again: what changed meanwhile is rescanned");
        std::fs::write(dir.join("web.toml"), "command = [\"x\"]\n").unwrap();
        assert!(quiet(&mut watch).contains(&Change::Files), "a file saved after is seen");
    }

    /// This thread acts as `uid` (its effective uid alone; the saved uid
    /// stays root's, so it may go back with `act_as(0)`).
    fn act_as(uid: libc::uid_t) {
        // SAFETY: a raw system call with integer arguments; it changes this
        // thread's effective uid only, not the other threads'.
        let acted = unsafe { libc::syscall(libc::SYS_setresuid, libc::uid_t::MAX, uid, libc::uid_t::MAX) };
        assert_eq!(acted, 0, "setresuid to {uid}: {}", std::io::Error::last_os_error());
        if uid == 0 {
            // SAFETY: prctl with integer arguments; a change of effective
            // uid made the process undumpable, as it was not.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        }
    }

    /// A directory replaced by one that cannot be watched (here, one the
    /// watcher's user may not read) is watched once it can be, at a
    /// rearm: the watcher, and its watch of the parent, kept meanwhile.
    #[test]
    fn a_replaced_directory_that_cannot_be_watched_yet_is_watched_once_it_can_be() {
        use std::os::unix::fs::PermissionsExt;
        assert!(nix::unistd::geteuid().is_root(), "this test changes its thread's effective uid and must run as root");
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = root.path().join("wl");
        std::fs::create_dir(&dir).unwrap();
        let (watched, parent) = (dir.clone(), root.path().to_owned());
        let acting = std::thread::spawn(move || {
            act_as(4_000_000_002);
            let mut watch = Watch::new(&watched).unwrap();
            let first = watch.watching();
            act_as(0);
            std::fs::rename(&watched, parent.join("wl.old")).unwrap();
            std::fs::create_dir(&watched).unwrap();
            std::fs::set_permissions(&watched, std::fs::Permissions::from_mode(0o711)).unwrap();
            act_as(4_000_000_002);
            quiet(&mut watch);
            watch.rearm();
            let unreadable = watch.watching();
            act_as(0);
            std::fs::set_permissions(&watched, std::fs::Permissions::from_mode(0o755)).unwrap();
            // Seen meanwhile by the parent's watch, kept: the mend brings a rescan.
            let meanwhile = quiet(&mut watch);
            act_as(4_000_000_002);
            watch.rearm();
            let readable = watch.watching();
            act_as(0);
            (first, unreadable, meanwhile, readable, watch)
        });
        let (first, unreadable, meanwhile, readable, mut watch) = acting.join().unwrap();
        assert!(first && !unreadable && readable, "watched {first}, then {unreadable}, then {readable}");
        assert!(meanwhile.contains(&Change::Files), "the parent's watch went with the target's: {meanwhile:?}");
        assert!(quiet(&mut watch).contains(&Change::Rewatched), "watched again: what changed meanwhile is rescanned");
        std::fs::write(dir.join("web.toml"), "command = [\"x\"]\n").unwrap();
        assert!(quiet(&mut watch).contains(&Change::Files), "a file saved in the new directory is seen");
    }

    #[test]
    fn a_file_is_being_written_from_its_first_write_or_empty_creation_to_its_close() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wl");
        std::fs::create_dir(&dir).unwrap();
        let writes = Writes::default();
        let begun = Instant::now();
        let open = || {
            writes
                .seen()
                .iter()
                .filter(|(_, s)| s.open)
                .map(|(n, _)| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let note =
            |kind, path: &Path| writes.note(&notify::Event::new(kind).add_path(path.to_owned()), Some(root.path()));

        std::fs::write(dir.join("new.toml"), "").unwrap();
        note(EventKind::Create(CreateKind::File), &dir.join("new.toml"));
        std::fs::write(dir.join("full.toml"), "command = [\"x\"]\n").unwrap();
        note(EventKind::Create(CreateKind::File), &dir.join("full.toml"));
        std::os::unix::fs::symlink(dir.join("full.toml"), dir.join("link.toml")).unwrap();
        note(EventKind::Create(CreateKind::File), &dir.join("link.toml"));
        note(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)), &dir.join("edit.toml"));
        // The parent's own files are not the directory's.
        note(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)), &root.path().join("paddock.toml"));
        assert_eq!(open(), ["edit.toml", "new.toml"], "made empty, or written to; not a link or a linked file");
        assert!(writes.patience_ends().is_some_and(|end| end >= begun + WRITE_PATIENCE));

        note(EventKind::Access(AccessKind::Close(AccessMode::Write)), &dir.join("new.toml"));
        note(EventKind::Remove(RemoveKind::File), &dir.join("gone.toml"));
        assert_eq!(open(), ["edit.toml"]);
        note(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &dir.join("edit.toml"));
        assert!(open().is_empty(), "renamed away");
        assert_eq!(writes.patience_ends(), None);

        // A scan that began before those events withholds what they
        // touched; one that begins after them, none (all are closed).
        let names: Vec<String> = writes.withheld(begun).into_iter().collect();
        assert_eq!(names, ["edit.toml", "gone.toml", "new.toml"]);
        assert!(writes.withheld(Instant::now()).is_empty());
    }
}
