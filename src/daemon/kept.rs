//! What the daemon keeps of each workload across its own restarts, in
//! `STATE_DIR/workloads/NAME.json`: its id slice (also in the id table),
//! a hold by `paddock stop`, and what its last run came to (a one-shot
//! that finished, or one that gave up, is not run again for the same
//! manifest). Each file is written atomically, only when it changes.
//!
//! State that cannot be read fails closed: a workload whose file is
//! unreadable is held (and says so) rather than started, and a lost id
//! table is rebuilt from every slice these files and the sandbox records
//! name, so no slice is given to a second workload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::idmap::{AllocError, Allocations, Slice};
use crate::model::WorkloadName;
use crate::reconcile::{Ended, Version};

/// What a daemon keeps of a workload. A field it does not know (written
/// by a newer paddock, before a downgrade) is ignored, not taken for a
/// torn file: the file is read for what this daemon knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<Slice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
    /// How its last run ended, where no `ended` says it (held by `paddock
    /// stop`, waiting out a restart delay, running again): `status` shows
    /// it after a restart of the daemon, as before. Only
    /// shown: an end a newer daemon wrote that this one does not know is
    /// none, not a torn file.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::reconcile::or_none")]
    pub last_exit: Option<crate::model::Exit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<crate::reconcile::Replacing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<crate::reconcile::Counts>,
    /// The end of the restart delay it was waiting out: a successor in
    /// the same boot waits out what is left of it, rather than start it
    /// at once (a crash-looping daemon, or each upgrade, would undo
    /// every delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// A stop under way (`paddock stop`, a restart): the run it stops,
    /// and when its timeout ends. A successor that adopts that run signals
    /// it again (the signal may not have gone) but kills it when this
    /// timeout ends, not a whole timeout later.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::reconcile::or_none")]
    pub stopping: Option<Stopping>,
    /// Why the start the delay follows failed, where it did (an exit says
    /// itself in `last_exit`): shown by `status` with the rest of it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::reconcile::or_none")]
    pub start_error: Option<String>,
    /// Forgotten in doubt while processes ran as its ids: its slice was
    /// kept, and its name is held in doubt while they run (after a restart
    /// of the daemon too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
    /// What the versions of `hold` and `ended` read as: a successor that
    /// finds the file at another version reading the same keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "reads_or_none")]
    pub reads: Vec<crate::reconcile::Reads>,
}

/// `Kept::reads`, or none where it says what this daemon does not know.
fn reads_or_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<crate::reconcile::Reads>, D::Error> {
    Ok(crate::reconcile::or_none(deserializer)?.unwrap_or_default())
}

/// A stop under way of the run of `version` whose init is `pid`, killed
/// when `until` ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopping {
    pub version: Version,
    pub pid: i32,
    pub until: Delay,
}

/// When a restart delay ends, on the boot clock of the boot it was
/// begun in (`records::boot_id`): after a reboot it names nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    pub boot: String,
    /// Milliseconds after that boot began (CLOCK_BOOTTIME).
    pub until_ms: u64,
}

impl Delay {
    /// A delay that ends `left` from now; None where this boot or its
    /// clock is unknown.
    pub fn ending_in(left: std::time::Duration) -> Option<Self> {
        let now = crate::sandbox::process::boot_clock()?;
        let until_ms = u64::try_from((now + left).as_millis()).ok()?;
        Some(Delay { boot: crate::daemon::records::boot_id()?, until_ms })
    }

    /// What is left of it now: None once it is over, or if it was begun
    /// in another boot.
    pub fn left(&self) -> Option<std::time::Duration> {
        if crate::daemon::records::boot_id()? != self.boot {
            return None;
        }
        let now = crate::sandbox::process::boot_clock()?;
        Some(std::time::Duration::from_millis(self.until_ms).checked_sub(now)?).filter(|d| !d.is_zero())
    }
}

/// What `load` found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub kept: BTreeMap<WorkloadName, Kept>,
    /// Workloads whose file could not be read: to be held, in doubt. The
    /// file is kept aside as NAME.json.corrupt (`fsutil::aside`).
    pub unreadable: Vec<(WorkloadName, String)>,
    /// An older daemon's held list that could not be read: which workloads
    /// it held is unknown, so every one is held until an operator starts it.
    /// (A directory or file that could not be read for a moment, out of
    /// descriptors or memory, is in doubt too: left as it is, its workload
    /// held, or every one. The caller waits first, `unread_now`, as a load
    /// changes files: it moves corrupt ones aside, migrates `held.json`.)
    pub all_in_doubt: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KeptStore {
    dir: PathBuf,
}

impl KeptStore {
    pub fn new(state_dir: &Path) -> Self {
        KeptStore { dir: state_dir.join("workloads") }
    }

    /// Where `name`'s kept state is.
    pub fn path(&self, name: &WorkloadName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Replaces a workload's file atomically and durably (the file and
    /// the directory fsynced), or removes it when there is nothing to keep:
    /// a batch of one (`write_all`).
    pub fn write(&self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        let one = BTreeMap::from([(name.clone(), Some(kept.clone()))]);
        self.write_all(&one).pop().map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Writes several workloads' files as `write` does each (a workload
    /// with nothing to keep, or None, has its file removed), with one
    /// fsync of the directory for all of them instead of one each: every
    /// file is written and fsynced, then all are renamed into place, then
    /// the directory is fsynced (syncfs, tried for batches, flushed the
    /// whole filesystem and took seconds on a busy one). Returns the
    /// workloads whose file could not be written or removed, with why.
    pub fn write_all(&self, batch: &BTreeMap<WorkloadName, Option<Kept>>) -> Vec<(WorkloadName, std::io::Error)> {
        let (mut failed, mut changed) = (Vec::new(), Vec::new());
        let made = crate::fsutil::create_private_dir(&self.dir);
        let mut staged = Vec::new();
        for (name, kept) in batch {
            let Some(kept) = kept.as_ref().filter(|k| **k != Kept::default()) else {
                match self.remove(name) {
                    Ok(()) => changed.push(name),
                    Err(e) => failed.push((name.clone(), e)),
                }
                continue;
            };
            let written = match &made {
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                Ok(()) => serde_json::to_vec_pretty(kept)
                    .map_err(std::io::Error::other)
                    .and_then(|json| crate::fsutil::stage(&self.path(name), &json, 0o600, true)),
            };
            match written {
                Ok(file) => staged.push((name, file)),
                Err(e) => failed.push((name.clone(), e)),
            }
        }
        for (name, file) in staged {
            match file.commit() {
                Ok(()) => changed.push(name),
                Err(e) => failed.push((name.clone(), e)),
            }
        }
        // Renames and removals are durable once the directory is; if it
        // cannot be synced, each is tried again.
        if !changed.is_empty()
            && let Err(e) = crate::fsutil::sync_dir(&self.dir)
        {
            let again = |name: &WorkloadName| (name.clone(), std::io::Error::new(e.kind(), e.to_string()));
            failed.extend(changed.into_iter().map(again));
        }
        failed
    }

    pub fn remove(&self, name: &WorkloadName) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// What of the kept state cannot be read for a moment now (out of
    /// descriptors or memory): the directory, or files. Changes nothing,
    /// and reads nothing: each file is opened (where a want of descriptors
    /// shows), not read twice at every start.
    pub fn unread_now(&self) -> Vec<String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if crate::fsutil::for_a_moment(&e) => return vec![format!("{}: {e}", self.dir.display())],
            Err(_) => return Vec::new(),
        };
        let files = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json"));
        files
            // Never a FIFO's open, which would wait for a writer.
            .filter_map(|file| match crate::fsutil::open_if_regular(&file) {
                Err(e) if crate::fsutil::for_a_moment(&e) => Some(format!("{}: {e}", file.display())),
                _ => None,
            })
            .collect()
    }

    /// Reads every workload's file (and `held.json` of older daemons, which
    /// becomes holds).
    pub fn load(&self, state_dir: &Path) -> Loaded {
        let mut loaded = Loaded::default();
        let listed = std::fs::read_dir(&self.dir);
        match &listed {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Not "nothing kept": whatever was held is not known.
            Err(e) => loaded.all_in_doubt = Some(format!("{}: {e}", self.dir.display())),
            Ok(_) => {}
        }
        if let Ok(entries) = listed {
            for entry in entries.flatten() {
                let file = entry.path();
                // A write a killed daemon left half done (the file itself is intact).
                if entry.file_name().to_str().is_some_and(crate::fsutil::is_temporary) {
                    let _ = std::fs::remove_file(&file);
                    continue;
                }
                let Some(name) = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| WorkloadName::try_from(n).ok())
                else {
                    continue;
                };
                let read = crate::fsutil::open_if_regular(&file).and_then(|mut f| {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut f, &mut bytes).map(|_| bytes)
                });
                let bytes = match read {
                    Ok(bytes) => Ok(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    // Left as it is (not corrupt), its workload in doubt.
                    Err(e) if crate::fsutil::for_a_moment(&e) => {
                        loaded.unreadable.push((name, format!("{}: {e}", file.display())));
                        continue;
                    }
                    // What it is (a directory, say) is in the way: as corrupt.
                    Err(e) => Err(e.to_string()),
                };
                let read = bytes.and_then(|b| serde_json::from_slice::<Kept>(&b).map_err(|e| e.to_string()));
                match read {
                    Ok(kept) => {
                        loaded.kept.insert(name, kept);
                    }
                    Err(e) => {
                        let _ = std::fs::rename(&file, crate::fsutil::aside(&file));
                        loaded.unreadable.push((name, format!("{}: {e}", file.display())));
                    }
                }
            }
        }
        let held = state_dir.join("held.json");
        if let Ok(bytes) = std::fs::read(&held) {
            match serde_json::from_slice::<BTreeMap<String, u64>>(&bytes) {
                Ok(holds) => {
                    for (name, version) in holds {
                        if let Ok(name) = WorkloadName::try_from(name.as_str()) {
                            loaded.kept.entry(name).or_default().hold = Some(Version(version));
                        }
                    }
                }
                Err(e) => loaded.all_in_doubt = Some(format!("{}: {e}", held.display())),
            }
            let _ = std::fs::rename(&held, state_dir.join("held.json.migrated"));
        }
        loaded
    }
}

/// Rebuilds an unreadable id table from every slice the daemon knows of:
/// the workloads' kept files and the sandbox records. The bad file is kept
/// beside it. Returns the names whose slice is unknown (they are known
/// only by their logs): they are held rather than given a new slice that
/// might be another's.
pub fn repair_allocations(
    state_dir: &Path,
    kept: &BTreeMap<WorkloadName, Kept>,
    recorded: &[(String, Slice)],
) -> Vec<WorkloadName> {
    let path = state_dir.join(Allocations::FILE);
    let aside = crate::fsutil::aside(&path);
    let mut known: BTreeMap<String, Slice> = kept.iter().filter_map(|(n, k)| Some((n.to_string(), k.slice?))).collect();
    known.extend(recorded.iter().cloned());
    match Allocations::rebuild_if_unreadable(state_dir, &aside, known.clone()) {
        Ok(None) => return Vec::new(),
        Ok(Some(AllocError::Read { source, .. })) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(file = %path.display(), "the id table is missing; rebuilt it from the workloads' kept state and the sandbox records");
        }
        Ok(Some(e)) => {
            tracing::error!(file = %path.display(), error = %e, kept = %aside.display(), "the id table is unreadable; rebuilt it from the workloads' kept state and the sandbox records");
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "the id table is unreadable and cannot be rebuilt");
            return Vec::new();
        }
    }
    // Workloads that ran here (their logs say so) with no slice on record.
    let logs = std::fs::read_dir(state_dir.join("logs")).into_iter().flatten().flatten();
    let mut doubtful: Vec<WorkloadName> = logs
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_owned();
            WorkloadName::try_from(file.strip_suffix(".log")?).ok()
        })
        .filter(|n| !known.contains_key(n.as_str()))
        .collect();
    doubtful.sort();
    doubtful.dedup();
    doubtful
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::IdRange;

    fn n(s: &str) -> WorkloadName {
        WorkloadName::try_from(s).unwrap()
    }

    fn slice(start: u32) -> Slice {
        Slice { uid: IdRange { start, count: 65536 }, gid: IdRange { start, count: 65536 } }
    }

    #[test]
    fn a_batch_is_written_removed_and_failed_per_workload_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeptStore::new(dir.path());
        let held = |v| Kept { slice: Some(slice(100_000)), hold: Some(Version(v)), ..Kept::default() };
        store.write(&n("gone"), &held(1)).unwrap();
        store.write(&n("idle"), &held(1)).unwrap();
        store.write(&n("web"), &held(1)).unwrap();
        // A directory where a file belongs: that one fails, the rest are done.
        std::fs::create_dir(dir.path().join("workloads/stuck.json")).unwrap();
        let batch: BTreeMap<WorkloadName, Option<Kept>> = [
            (n("new"), Some(held(2))),
            (n("web"), Some(held(3))),
            (n("gone"), None),
            (n("idle"), Some(Kept::default())),
            (n("stuck"), Some(held(4))),
        ]
        .into_iter()
        .collect();
        // A write a killed daemon left half done.
        std::fs::write(dir.path().join("workloads/.web.json.1.2.tmp"), "{to").unwrap();
        let failed = store.write_all(&batch);
        assert_eq!(failed.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["stuck"], "{failed:?}");
        let loaded = store.load(dir.path());
        assert_eq!(loaded.kept.keys().map(WorkloadName::as_str).collect::<Vec<_>>(), ["new", "web"]);
        // The leftover is gone, not reported (the directory in stuck's place is).
        assert_eq!(loaded.unreadable.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["stuck"]);
        assert_eq!((loaded.kept[&n("new")].hold, loaded.kept[&n("web")].hold), (Some(Version(2)), Some(Version(3))));
        let left: Vec<String> = std::fs::read_dir(dir.path().join("workloads"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// What is left of a delay: in this boot only, and none once over.
    #[test]
    fn a_delay_is_left_in_its_own_boot_only() {
        let delay = Delay::ending_in(std::time::Duration::from_secs(30)).expect("this boot and its clock");
        let left = delay.left().unwrap();
        assert!(left > std::time::Duration::from_secs(29) && left <= std::time::Duration::from_secs(30), "{left:?}");
        assert_eq!(Delay { boot: "another boot".into(), ..delay.clone() }.left(), None);
        assert_eq!(Delay { until_ms: 1, ..delay }.left(), None, "over");
    }

    #[test]
    fn kept_state_round_trips_and_an_unreadable_file_is_reported_and_put_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeptStore::new(dir.path());
        let kept = Kept {
            slice: Some(slice(100_000)),
            hold: Some(Version(7)),
            ended: Some(Ended { version: Version(7), failed: false, exit: Some(crate::model::Exit::Code(0)) }),
            last_exit: Some(crate::model::Exit::Signal(15)),
            replacing: Some(crate::reconcile::Replacing {
                version: Version(7),
                unhealthy: true,
                halted: false,
                pid: Some(42),
            }),
            counts: Some(crate::reconcile::Counts { version: Version(7), failures: 3, restarts: 5, halted: false }),
            delay: Some(Delay { boot: "b".into(), until_ms: 1234 }),
            start_error: Some("cannot execute /no/such: ENOENT".into()),
            stopping: Some(Stopping { version: Version(7), pid: 42, until: Delay { boot: "b".into(), until_ms: 99 } }),
            reserved: true,
            reads: vec![crate::reconcile::Reads { version: Version(7), digest: 99 }],
        };
        store.write(&n("web"), &kept).unwrap();
        std::fs::write(dir.path().join("workloads/bad.json"), "{torn").unwrap();
        std::fs::write(
            dir.path().join("workloads/newer.json"),
            r#"{"hold": 3, "from_the_future": true, "last_exit": {"frozen": 9},
                "ended": {"version": 3, "failed": false, "exit": {"frozen": 9}}}"#,
        )
        .unwrap();
        let loaded = store.load(dir.path());
        assert_eq!(loaded.kept[&n("web")], kept);
        assert_eq!(loaded.kept[&n("newer")].hold, Some(Version(3)), "a field it does not know is ignored");
        assert_eq!(loaded.kept[&n("newer")].last_exit, None, "and an end it does not know is none");
        assert_eq!(loaded.kept[&n("newer")].ended.map(|e| (e.version, e.exit)), Some((Version(3), None)));
        assert_eq!(loaded.unreadable.len(), 1);
        assert_eq!(loaded.unreadable[0].0, n("bad"));
        assert!(dir.path().join("workloads/bad.json.corrupt").exists());
        // Nothing to keep: no file.
        store.write(&n("web"), &Kept::default()).unwrap();
        assert!(!dir.path().join("workloads/web.json").exists());
    }

    /// A FIFO in the kept files' place is never opened to wait for a
    /// writer (the daemon's start would hang there): taken for a corrupt
    /// file, put aside, its workload in doubt.
    #[test]
    fn a_fifo_among_the_kept_files_holds_up_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("workloads")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("workloads/web.json"), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap();
        let path = dir.path().to_owned();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let store = KeptStore::new(&path);
            let _ = done.send((store.unread_now(), store.load(&path)));
        });
        let (unread, loaded) = finished.recv_timeout(std::time::Duration::from_secs(5)).expect("it waited on the FIFO");
        assert!(unread.is_empty(), "{unread:?}");
        assert_eq!(loaded.unreadable.len(), 1, "{loaded:?}");
        assert!(dir.path().join("workloads/web.json.corrupt").exists());
    }

    /// A kept directory that cannot be listed is not "nothing kept": which
    /// workloads were held is not known, so each is (until `paddock start`).
    #[test]
    fn a_kept_directory_that_cannot_be_listed_puts_every_workload_in_doubt() {
        let dir = tempfile::tempdir().unwrap();
        // Not a directory (ENOTDIR): for good, not for a moment.
        std::fs::write(dir.path().join("workloads"), "").unwrap();
        let store = KeptStore::new(dir.path());
        assert!(store.unread_now().is_empty(), "not waited for: {:?}", store.unread_now());
        let loaded = store.load(dir.path());
        assert!(loaded.kept.is_empty());
        assert!(loaded.all_in_doubt.as_deref().is_some_and(|why| why.contains("Not a directory")), "{loaded:?}");
        // Not there at all: nothing kept yet, which is no error.
        let fresh = tempfile::tempdir().unwrap();
        assert!(KeptStore::new(fresh.path()).unread_now().is_empty());
        let loaded = KeptStore::new(fresh.path()).load(fresh.path());
        assert!(loaded.all_in_doubt.is_none());
    }

    /// What failed for want of descriptors or memory says nothing of the
    /// file: read again, never moved aside as corrupt.
    #[test]
    fn only_a_want_of_descriptors_or_memory_is_for_a_moment() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EAGAIN, libc::EINTR] {
            assert!(crate::fsutil::for_a_moment(&std::io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::EISDIR, libc::ENOTDIR, libc::EACCES, libc::EIO, libc::ENOENT] {
            assert!(!crate::fsutil::for_a_moment(&std::io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }

    #[test]
    fn an_old_held_list_becomes_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("held.json"), r#"{"web": 42}"#).unwrap();
        let loaded = KeptStore::new(dir.path()).load(dir.path());
        assert_eq!(loaded.kept[&n("web")].hold, Some(Version(42)));
        assert!(!dir.path().join("held.json").exists());
    }

    #[test]
    fn a_lost_id_table_is_rebuilt_from_every_source_and_unknown_slices_are_doubted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(Allocations::FILE), "{not json").unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        for log in ["stopped.log", "running.log", "lost.log"] {
            std::fs::write(dir.path().join("logs").join(log), "").unwrap();
        }
        // A stopped workload's slice is known only from its kept state.
        let kept = BTreeMap::from([(n("stopped"), Kept { slice: Some(slice(100_000)), ..Kept::default() })]);
        let recorded = vec![("running".to_owned(), slice(165_536))];
        let doubtful = repair_allocations(dir.path(), &kept, &recorded);
        assert_eq!(doubtful, [n("lost")]);
        let table = Allocations::load(dir.path()).unwrap();
        assert_eq!(table.get("stopped"), Some(&slice(100_000)));
        assert_eq!(table.get("running"), Some(&slice(165_536)));
        assert_eq!(std::fs::read_to_string(dir.path().join("idmap.json.corrupt")).unwrap(), "{not json");
        // Corrupt again: the first copy is kept, the second beside it.
        std::fs::write(dir.path().join(Allocations::FILE), "{again").unwrap();
        repair_allocations(dir.path(), &kept, &recorded);
        assert_eq!(std::fs::read_to_string(dir.path().join("idmap.json.corrupt")).unwrap(), "{not json");
        assert_eq!(std::fs::read_to_string(dir.path().join("idmap.json.corrupt.1")).unwrap(), "{again");
    }

    /// A table that cannot be read at all is left as it is (a read error
    /// says nothing of what it holds); one that is not a table stays in
    /// place until the rebuilt one is written over it, so a full disk
    /// leaves a table every allocation refuses, never an empty one that
    /// would give a running workload's slice again.
    #[test]
    fn an_id_table_is_replaced_only_by_its_rebuilt_one() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join(Allocations::FILE);
        std::fs::create_dir(&table).unwrap();
        let kept = BTreeMap::from([(n("web"), Kept { slice: Some(slice(100_000)), ..Kept::default() })]);
        assert!(repair_allocations(dir.path(), &kept, &[]).is_empty());
        assert!(table.is_dir() && !dir.path().join("idmap.json.corrupt").exists(), "left alone");

        // A full state directory: the copy aside, or the rebuilt table, cannot be written.
        let full = crate::fsutil::SmallTmpfs::mount("64k");
        let table = full.path().join(Allocations::FILE);
        std::fs::write(&table, "{not json").unwrap();
        use std::io::Write;
        let mut filler = std::fs::File::create(full.path().join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
        let _ = repair_allocations(full.path(), &kept, &[("running".to_owned(), slice(165_536))]);
        assert_eq!(std::fs::read_to_string(&table).unwrap(), "{not json", "the bad table is in place");
        assert!(Allocations::load(full.path()).is_err(), "and still refused, not read as empty");
    }

    #[test]
    fn a_rebuilt_id_table_keeps_the_slices_of_the_paddock_runs_that_run() {
        use crate::idmap::{Cutting, Isolation, RunHold};
        let dir = tempfile::tempdir().unwrap();
        let (state, four) = (dir.path(), [crate::idmap::IdRange { start: 100_000, count: 4 * 65536 }]);
        let cutting = Cutting { uids: &four, gids: &four, size: 65536, isolation: Isolation::PerWorkload };
        let ended = RunHold::ended_under(state);
        // Two runs, as `paddock run` takes and records them; one has ended.
        let mut held = Vec::new();
        for name in ["runs-on", "ended"] {
            let hold = RunHold::take(state, name).unwrap();
            let given = Allocations::update(state, |t| {
                let slice = t.allocate_for_run(name, cutting, &ended)?;
                hold.record(&t.slices_of(name))?;
                Ok(slice)
            })
            .unwrap();
            held.push((hold, given));
        }
        let (ended_hold, ended_slice) = held.pop().unwrap();
        drop(ended_hold);
        let on = held[0].1;
        // A run of an older paddock, which wrote no slice, and a file that no run holds.
        let _older = RunHold::take(state, "older").unwrap();
        std::fs::write(state.join(Allocations::FILE), "{not json").unwrap();
        // The daemon's web has the fourth slice.
        let web = slice(100_000 + 3 * 65536);
        let kept = BTreeMap::from([(n("web"), Kept { slice: Some(web), ..Kept::default() })]);
        assert!(repair_allocations(state, &kept, &[]).is_empty());
        let mut table = Allocations::load(state).unwrap();
        assert_eq!(table.get("runs-on"), Some(&on), "the running run's slice is known again");
        assert_eq!(table.get("ended"), None);
        assert_eq!(table.get("web"), Some(&web));
        // A new workload gets neither the run's slice nor the daemon's.
        let new = table.allocate("new", cutting, &ended).unwrap();
        assert_eq!(new, ended_slice, "{table:?}");
        assert_ne!(table.allocate("third", cutting, &ended).unwrap(), on);
        assert!(matches!(table.allocate("later", cutting, &ended), Err(crate::idmap::AllocError::Exhausted { .. })));
        // Once the run ends, its slice is given away when none is free.
        drop(held);
        assert_eq!(table.allocate("later", cutting, &ended).unwrap(), on);
    }

    #[test]
    fn a_rebuilt_id_table_keeps_what_runs_had_before_their_name_changed_slices_and_skips_stale_files() {
        use crate::idmap::RunHold;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        // Runs of web go on with the slice web had before the daemon's settings changed it.
        let web_run = RunHold::take(state, "web").unwrap();
        web_run.record(&[slice(100_000)]).unwrap();
        // A run of x waits for the table, its file as an earlier run of x
        // left it: that slice is the daemon's db's now.
        let waiting = RunHold::take(state, "x").unwrap();
        waiting.record(&[slice(231_072)]).unwrap();
        std::fs::write(state.join(Allocations::FILE), "{not json").unwrap();
        let kept = BTreeMap::from([
            (n("web"), Kept { slice: Some(slice(165_536)), ..Kept::default() }),
            (n("db"), Kept { slice: Some(slice(231_072)), ..Kept::default() }),
        ]);
        assert!(repair_allocations(state, &kept, &[]).is_empty());
        let table = Allocations::load(state).unwrap();
        assert_eq!(table.slices_of("web"), [slice(165_536), slice(100_000)]);
        assert_eq!(table.get("x"), None, "db's slice is not x's");
        assert_eq!(table.slices_of("db"), [slice(231_072)]);
    }

    #[test]
    fn the_id_table_is_rebuilt_under_the_lock_a_paddock_run_takes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(Allocations::FILE), "{not json").unwrap();
        // A `paddock run` between its look at the table and its write.
        let lock = std::fs::File::create(dir.path().join("idmap.lock")).unwrap();
        let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let state = dir.path().to_owned();
        let kept = BTreeMap::from([(n("web"), Kept { slice: Some(slice(100_000)), ..Kept::default() })]);
        let repair = std::thread::spawn(move || repair_allocations(&state, &kept, &[]));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!dir.path().join("idmap.json.corrupt").exists(), "nothing moved while the lock is held");
        drop(held);
        assert!(repair.join().unwrap().is_empty());
        assert_eq!(Allocations::load(dir.path()).unwrap().get("web"), Some(&slice(100_000)));
        assert!(dir.path().join("idmap.json.corrupt").exists());
    }
}
