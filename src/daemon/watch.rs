//! Watching the workloads directory with notify's inotify watcher: the
//! directory's target and its parent. A directory that is a symlink
//! swapped to a new target (as Kubernetes ConfigMaps do), or a directory
//! replaced whole (`mv wl.new wl`), changes nothing in the old target,
//! only in the parent; `rearm` then moves the watch to what the path is
//! now. notify's thread only says "something changed" (a rescan compares
//! whole files), once per event batch, and nothing wakes while nothing
//! happens; the event loop debounces.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
}

pub struct Watch {
    watcher: RecommendedWatcher,
    dir: PathBuf,
    /// What `dir` resolves to, and its identity, as watched now.
    target: PathBuf,
    identity: (u64, u64),
    pub changes: mpsc::UnboundedReceiver<Change>,
    /// Files of the directory written to (or created) and not yet closed
    /// by their writer, by name, with when that was last seen.
    writing: Arc<Mutex<BTreeMap<OsString, Instant>>>,
}

/// How long a file being written is read as it was before the write: a
/// writer that keeps it open longer has it read as it is then.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(2);

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
    pub fn new(dir: &Path) -> Result<Self, WatchError> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| WatchError { path: dir.to_owned(), source };
        let target = std::fs::canonicalize(dir).map_err(|e| err(e.into()))?;
        let identity = identity(&target).map_err(|e| err(e.into()))?;
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned);
        let entry: Option<OsString> = dir.file_name().map(ToOwned::to_owned);
        let (tx, changes) = mpsc::unbounded_channel();
        let parent_of_entry = parent.clone();
        let writing: Arc<Mutex<BTreeMap<OsString, Instant>>> = Arc::default();
        let writes = writing.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = &event {
                note_writes(&writes, event, parent_of_entry.as_deref());
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
                Ok(event) => event
                    .paths
                    .iter()
                    .any(|p| {
                        let in_parent = p.parent().map(Path::to_owned) == parent_of_entry;
                        !in_parent || p.file_name().map(ToOwned::to_owned) == entry
                    })
                    .then_some(Change::Files),
                Err(error) => {
                    tracing::warn!(%error, "watch error; rescanning everything");
                    Some(Change::Lost)
                }
            };
            if let Some(change) = change {
                let _ = tx.send(change);
            }
        };
        let mut watcher = notify::recommended_watcher(handler).map_err(|e| err(e.into()))?;
        watcher.watch(&target, RecursiveMode::NonRecursive).map_err(|e| err(e.into()))?;
        if let Some(parent) = &parent {
            watcher.watch(parent, RecursiveMode::NonRecursive).map_err(|e| err(e.into()))?;
        }
        Ok(Watch { watcher, dir: dir.to_owned(), target, identity, changes, writing })
    }

    /// The files being written now (by name), to be read as they were
    /// before, and when the first of them is to be read anyway.
    pub fn writing(&self) -> (BTreeSet<String>, Option<Instant>) {
        let now = Instant::now();
        let mut writing = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writing.retain(|_, seen| now.saturating_duration_since(*seen) < WRITE_PATIENCE);
        let until = writing.values().min().map(|seen| *seen + WRITE_PATIENCE);
        (writing.keys().map(|name| name.to_string_lossy().into_owned()).collect(), until)
    }

    /// After a rescan: if the directory now resolves elsewhere (a swapped
    /// symlink) or is another directory (replaced whole), watch that.
    pub fn rearm(&mut self) {
        let Ok(target) = std::fs::canonicalize(&self.dir) else { return };
        let Ok(identity) = identity(&target) else { return };
        if target == self.target && identity == self.identity {
            return;
        }
        // The old target may be gone already; its watch went with it.
        let _ = self.watcher.unwatch(&self.target);
        match self.watcher.watch(&target, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::info!(dir = %self.dir.display(), target = %target.display(), "the workloads directory was replaced; watching what it is now")
            }
            Err(e) => {
                tracing::error!(dir = %target.display(), error = %e, "cannot watch the workloads directory; only the periodic resync will see its changes")
            }
        }
        self.target = target;
        self.identity = identity;
    }
}

/// Keeps `writing` up to date with `event`: a file of the directory (not
/// of its parent) written to or created is being written until its
/// writer closes it, or it is removed or renamed away.
fn note_writes(writing: &Mutex<BTreeMap<OsString, Instant>>, event: &notify::Event, parent: Option<&Path>) {
    // A file just made empty is about to be written; a link made to a
    // file with content (`ln`), a symlink or a FIFO is not being written.
    let made_empty = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
    let begun = match event.kind {
        EventKind::Modify(ModifyKind::Data(_)) => true,
        EventKind::Create(CreateKind::File) => event.paths.iter().any(|p| made_empty(p)),
        _ => false,
    };
    let ended = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_))
    );
    if !begun && !ended {
        return;
    }
    let mut writing = writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for path in &event.paths {
        // The parent's files (its configuration, the directory's own entry) are none of its.
        if parent.is_some() && path.parent() == parent {
            continue;
        }
        let Some(name) = path.file_name() else { continue };
        match begun {
            true => drop(writing.insert(name.to_owned(), Instant::now())),
            false => drop(writing.remove(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn a_file_is_being_written_from_its_first_write_or_empty_creation_to_its_close() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wl");
        std::fs::create_dir(&dir).unwrap();
        let writing: Mutex<BTreeMap<OsString, Instant>> = Mutex::new(BTreeMap::new());
        let names = || writing.lock().unwrap().keys().map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>();
        let event = |kind, path: &Path| notify::Event::new(kind).add_path(path.to_owned());
        let note = |kind, path: &Path| note_writes(&writing, &event(kind, path), Some(root.path()));

        std::fs::write(dir.join("new.toml"), "").unwrap();
        note(EventKind::Create(CreateKind::File), &dir.join("new.toml"));
        std::fs::write(dir.join("full.toml"), "command = [\"x\"]\n").unwrap();
        note(EventKind::Create(CreateKind::File), &dir.join("full.toml"));
        std::os::unix::fs::symlink(dir.join("full.toml"), dir.join("link.toml")).unwrap();
        note(EventKind::Create(CreateKind::File), &dir.join("link.toml"));
        note(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)), &dir.join("edit.toml"));
        // The parent's own files are not the directory's.
        note(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)), &root.path().join("paddock.toml"));
        assert_eq!(names(), ["edit.toml", "new.toml"], "made empty, or written to; not a link or a linked file");

        note(EventKind::Access(AccessKind::Close(AccessMode::Write)), &dir.join("new.toml"));
        note(EventKind::Remove(RemoveKind::File), &dir.join("gone.toml"));
        assert_eq!(names(), ["edit.toml"]);
        note(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &dir.join("edit.toml"));
        assert!(names().is_empty(), "renamed away");
    }
}
