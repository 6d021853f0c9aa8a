//! What the daemon records of each sandbox it runs, in
//! `STATE_DIR/sandboxes/NAME.json`, before its workload may run anything:
//! the init's pid and start time, the boot, its cgroup, its id slice, the
//! manifest version it runs (and the file's text) and when it started. A
//! daemon that starts after its predecessor died (a crash, `kill -9`, an
//! upgrade's exec) reads them and adopts every sandbox still running; it
//! stops what it cannot adopt and cleans up after what is gone, before it
//! starts anything: never two sandboxes of one workload, never an orphan.
//! A record of an earlier boot, or one whose init is not in the sandbox's
//! cgroup, names a process that is not the sandbox's: it is forgotten, and
//! nothing is adopted or killed by its pid (the workload's cgroup, where
//! paddock puts it, is still emptied).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil::write_replace;
use crate::idmap::Slice;
use crate::model::WorkloadName;
use crate::reconcile::Version;
use crate::sandbox::cgroup::{self, Cgroup, Layout};
use crate::sandbox::process::{self, Killed};
use crate::sandbox::{AdoptError, Sandbox};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The host pid of the sandbox's init.
    pub pid: i32,
    /// Its start time (clock ticks after boot): pid and start time together
    /// name one process, even after the pid is recycled.
    pub start_time: u64,
    /// The cgroup's directories (one per hierarchy on v1), empty for none.
    /// Recovery looks where this daemon puts a workload's cgroup; a record's
    /// paths are taken only for an adopted sandbox whose init they hold,
    /// when this daemon's layout puts cgroups elsewhere (`Cgroup::recorded`).
    pub cgroup: Vec<PathBuf>,
    pub slice: Slice,
    /// The manifest version it runs.
    #[serde(default)]
    pub version: Option<Version>,
    /// When it was started, by the wall clock (older paddocks took an
    /// adopted sandbox's uptime from it; it is now `start_time`'s, by
    /// the boot clock, which no step of the wall clock moves).
    #[serde(default)]
    pub started: Option<std::time::SystemTime>,
    /// The boot it was started in (`/proc/sys/kernel/random/boot_id`).
    /// Pids and start times (clock ticks after boot) begin again at each
    /// boot, so after a reboot another process can have both a record's
    /// pid and its start time: a record of an earlier boot names nothing.
    /// None in records written before paddock recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// The manifest file's text it was started from (its hash is
    /// `version`): a successor daemon that finds the file invalid runs
    /// this on, as a daemon does after a bad edit, if it still passes
    /// validation. None in records written before paddock kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// This boot's id, read once; None where the kernel does not say.
pub fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
    .clone()
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sandboxes")
}

/// The record of `name`'s sandbox.
pub fn path(state_dir: &Path, name: &WorkloadName) -> PathBuf {
    dir(state_dir).join(format!("{name}.json"))
}

/// The state directory's lock, held for the daemon's life.
pub type Lock = nix::fcntl::Flock<std::fs::File>;

/// Held for the daemon's life: one daemon per state directory, so a
/// second one can never take the first one's sandboxes for a dead
/// predecessor's.
///
/// A lock held a moment longer than its daemon is waited for (up to
/// `LOCK_PATIENCE`): a daemon killed while it was cloning a sandbox leaves
/// a child that holds a copy of the lock until its parent-death signal
/// lands, and a restart (systemd's, or an operator's right after kill -9)
/// must not be refused for that.
pub fn lock(state_dir: &Path) -> std::io::Result<Lock> {
    lock_dir(state_dir, "daemon.lock", "state directory", "give this one its own --state-dir")
}

/// Locks `dir/file` for this daemon alone (waiting as `lock` says); the
/// error names the directory and says what to do.
fn lock_dir(dir: &Path, file: &str, what: &str, instead: &str) -> std::io::Result<Lock> {
    let named = |at: &Path, e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", at.display()));
    crate::fsutil::create_private_dir(dir).map_err(|e| named(dir, e))?;
    let path = dir.join(file);
    let waiting = || {
        tracing::info!(lock = %path.display(), "the {what} is locked; waiting a moment for its holder to go");
    };
    crate::fsutil::lock_within(&path, LOCK_PATIENCE, Duration::from_millis(10), waiting)
        .map_err(|e| named(&path, e))?
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "another paddock daemon uses the {what} {}; stop it first, or {instead}",
                dir.display()
            ))
        })
}

/// Held for the daemon's life too: one daemon per run directory, whose
/// network namespaces (`RUN_DIR/netns/NAME`) a second daemon, with a state
/// directory of its own, would take for strays and remove at its start.
/// (A file of its own: the run and state directories may be one.)
pub fn lock_run_dir(run_dir: &Path) -> std::io::Result<Lock> {
    lock_dir(run_dir, "daemon-run.lock", "run directory", "give this one its own `run_dir` in its configuration")
}

/// How long a held state-directory lock is waited for.
const LOCK_PATIENCE: Duration = Duration::from_secs(3);

/// Records a sandbox that just started. Not fsynced: a crash of the
/// machine also ends the process the record describes.
pub fn write(state_dir: &Path, name: &WorkloadName, record: &Record) -> std::io::Result<()> {
    crate::fsutil::create_private_dir(&dir(state_dir))?;
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_replace(&path(state_dir, name), &json, 0o600)
}

/// The record of `name`'s sandbox, if there is one that can be read.
pub fn read(state_dir: &Path, name: &WorkloadName) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(path(state_dir, name)).ok()?).ok()
}

/// Forgets a sandbox that ended.
pub fn remove(state_dir: &Path, name: &WorkloadName) {
    match std::fs::remove_file(path(state_dir, name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::error!(workload = %name, error = %e, "cannot remove the sandbox record");
        }
        _ => {}
    }
}

/// What `recover` found and did, for the log and the tests.
#[derive(Default)]
pub struct Recovery {
    /// Workloads whose sandbox (or part of it) was still there and was stopped.
    pub stopped: Vec<String>,
    /// Records that could not be read (removed after their cgroup was emptied).
    pub corrupt: Vec<PathBuf>,
    /// Slices the records held, to rebuild a lost id table with.
    pub slices: Vec<(String, Slice)>,
    /// Sandboxes still running, taken over (their records stay).
    pub adopted: Vec<(WorkloadName, Sandbox, Record)>,
    /// Records of sandboxes that could be neither adopted nor stopped, as
    /// whether they run could not be told (out of descriptors or memory):
    /// kept, and the daemon starts nothing, lest a workload run twice.
    pub unknown: Vec<String>,
    /// Workloads whose record could not be read and which have no cgroup
    /// to be found by, while processes run as their ids: a sandbox of
    /// theirs may run on, so they are held (and say why) rather than
    /// started beside it.
    pub doubted: Vec<(WorkloadName, String)>,
}

impl Recovery {
    /// A later pass (`recover` again, for what it could not tell), after
    /// this one: what this one stopped, removed or doubted is not there to
    /// be found again, and is kept; what can be adopted and what is still
    /// unknown are the later pass's.
    pub fn then(mut self, next: Recovery) -> Recovery {
        self.stopped.extend(next.stopped);
        self.corrupt.extend(next.corrupt);
        self.slices.extend(next.slices);
        self.doubted.extend(next.doubted);
        Recovery { adopted: next.adopted, unknown: next.unknown, ..self }
    }
}

/// Stops every sandbox a dead predecessor recorded, empties and removes
/// its cgroup, and removes the record; then empties and removes the
/// cgroups of the workloads in `known` (names the daemon allocated ids to)
/// that no record claims: a daemon killed between making a cgroup and
/// recording the sandbox leaves one. Runs before the first start.
///
/// A record's own cgroup paths are trusted only as far as the kernel
/// bears them out (a record is a file, and recovery kills what it names):
/// this daemon's layout is searched for what to kill. They are read to
/// tell whether the recorded init is still in its cgroup, and an adopted
/// sandbox whose cgroup is not in this daemon's layout keeps those of its
/// recorded directories that are `GROUP/NAME` on a cgroup filesystem and
/// hold its init (its pid and start time checked), and no other.
/// `group` is this daemon's (`cgroup::workloads_group`, worked out once
/// at its start): another daemon's workload of a name this one knows is
/// in another group, never taken for one a predecessor left.
pub fn recover(state_dir: &Path, layout: &Layout, group: &str, known: &[String]) -> Recovery {
    let mut out = Recovery::default();
    let group = group.to_owned();
    let entries = match std::fs::read_dir(dir(state_dir)) {
        Ok(entries) => entries.flatten().collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        // Not "none": every sandbox would be taken for unrecorded.
        Err(e) => {
            out.unknown.push(format!("the sandbox records: reading {}: {e}", dir(state_dir).display()));
            return out;
        }
    };
    let mut recorded = std::collections::BTreeSet::new();
    for entry in entries {
        let file = entry.path();
        let Some(stem) = file.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
            // Not a record (a temporary file of an interrupted write).
            let _ = std::fs::remove_file(&file);
            continue;
        };
        let Ok(name) = WorkloadName::try_from(stem) else {
            let _ = std::fs::remove_file(&file);
            continue;
        };
        recorded.insert(stem.to_owned());
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            // Gone meanwhile: its cgroup is swept with the unrecorded ones.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                recorded.remove(stem);
                continue;
            }
            // Not corrupt: unread (out of descriptors or memory). Kept.
            Err(e) => {
                out.unknown.push(format!("{stem}: reading {}: {e}", file.display()));
                continue;
            }
        };
        let record = serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string());
        // Whether the recorded init is in its recorded cgroup: None where
        // that cannot be read, and no directory was found to hold it.
        let in_its_cgroup = |record: &Record| {
            let mut unread = false;
            for dir in &record.cgroup {
                match cgroup::holds_checked(dir, record.pid) {
                    Ok(true) => return Some(true),
                    Ok(false) => {}
                    Err(_) => unread = true,
                }
            }
            (!unread).then_some(false)
        };
        let in_cgroup = record.as_ref().ok().filter(|r| !r.cgroup.is_empty()).map(in_its_cgroup);
        let mut found = false;
        match record {
            Ok(record) if record.boot.as_ref().is_some_and(|then| boot_id().is_some_and(|now| *then != now)) => {
                // Its processes ended with that boot; whatever has its pid
                // and start time now is not it, and is left alone.
                out.slices.push((stem.to_owned(), record.slice));
                tracing::info!(workload = stem, pid = record.pid, "a sandbox record of an earlier boot: forgotten");
            }
            // A sandbox that had a cgroup is in it for as long as it runs
            // (and a cgroup does not outlive a boot): an init that is not
            // there is another process with the recorded pid and start time.
            // The record's own paths, only read here: where an older
            // paddock put the cgroup, the sandbox it left is still there.
            Ok(record) if in_cgroup == Some(None) => {
                let dirs: Vec<String> = record.cgroup.iter().map(|d| d.display().to_string()).collect();
                out.unknown.push(format!("{stem}: its cgroup ({}) cannot be read", dirs.join(", ")));
                continue;
            }
            Ok(record) if in_cgroup == Some(Some(false)) => {
                out.slices.push((stem.to_owned(), record.slice));
                tracing::info!(
                    workload = stem,
                    pid = record.pid,
                    "a sandbox record whose init is not in its cgroup: forgotten"
                );
            }
            Ok(mut record) => {
                out.slices.push((stem.to_owned(), record.slice));
                // Where this daemon would put it, or else (the layout
                // changed: another cgroup_root, a unit that now
                // delegates) where it was put: stopped through it, with
                // `paddock exec` and probes joining it.
                let cgroup = match Cgroup::existing(layout, &group, stem) {
                    Some(here)
                        if record.cgroup.is_empty() || here.dirs().iter().any(|d| cgroup::holds(d, record.pid)) =>
                    {
                        Some(here)
                    }
                    _ => Cgroup::recorded(&record.cgroup, stem, record.pid),
                };
                match crate::sandbox::adopt(record.pid, record.start_time, cgroup) {
                    Ok(sandbox) => {
                        tracing::info!(
                            workload = stem,
                            pid = record.pid,
                            action = "adopt",
                            "adopted a sandbox that ran on without a daemon"
                        );
                        if record.boot.is_none()
                            && let Some(boot) = boot_id()
                        {
                            // Written by a paddock that did not record the
                            // boot: recorded now, so the next boot knows it.
                            record.boot = Some(boot);
                            if let Err(e) = write(state_dir, &name, &record) {
                                tracing::warn!(workload = stem, error = %e, "cannot add the boot to a sandbox record");
                            }
                        }
                        out.adopted.push((name, sandbox, record));
                        continue;
                    }
                    Err(AdoptError::Gone(_)) => {}
                    // Neither adopted nor stopped: the record is kept, and
                    // nothing may start (`Recovery::unknown`).
                    Err(e @ AdoptError::Unknown { .. }) => {
                        out.unknown.push(format!("{stem}: {e}"));
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(workload = stem, error = %e, "cannot adopt a predecessor's sandbox: stopping it")
                    }
                }
                match process::kill(record.pid, record.start_time, Duration::from_secs(5)) {
                    Killed::Gone => {}
                    Killed::Killed => found = true,
                    Killed::Stuck => {
                        found = true;
                        tracing::error!(workload = stem, pid = record.pid, "a predecessor's sandbox does not die");
                    }
                    Killed::Unknown(errno) => {
                        let pid = record.pid;
                        out.unknown
                            .push(format!("{stem}: whether its init (pid {pid}) still runs cannot be told: {errno}"));
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(record = %file.display(), error = %e, "corrupt sandbox record; its cgroup is still searched");
                out.corrupt.push(file.clone());
                // No cgroup to search (cgroup v1 and no limits): what it
                // named is found by the ids its sandbox runs as.
                if Cgroup::existing(layout, &group, stem).is_none() {
                    let record = file.display();
                    let why = match crate::idmap::Allocations::load(state_dir) {
                        Ok(table) => table.get(stem).and_then(|slice| crate::sandbox::process::in_use(&slice.uid)).map(|in_use| format!(
                            "its sandbox record {record} was unreadable ({e}), and {in_use}: a sandbox of it may still run; held until `paddock start {stem}`, once they are gone"
                        )),
                        Err(_) => Some(format!(
                            "its sandbox record {record} was unreadable ({e}), and so is the id table: whether a sandbox of it still runs cannot be told; held until `paddock start {stem}`"
                        )),
                    };
                    if let Some(why) = why {
                        tracing::error!(workload = stem, "{why}");
                        out.doubted.push((name.clone(), why));
                    }
                }
            }
        }
        found |= empty_cgroup(layout, &group, &name);
        if found {
            tracing::warn!(workload = stem, action = "recover", "stopped a sandbox left by a daemon that died");
            out.stopped.push(stem.to_owned());
        }
        let _ = std::fs::remove_file(&file);
    }
    for stem in known.iter().filter(|n| !recorded.contains(*n)) {
        if let Ok(name) = WorkloadName::try_from(stem.as_str())
            && empty_cgroup(layout, &group, &name)
        {
            tracing::warn!(
                workload = stem,
                action = "recover",
                "stopped processes left in the cgroup of an unrecorded sandbox"
            );
            out.stopped.push(stem.clone());
        }
    }
    out
}

/// Kills what is left in the workload's cgroup and removes it; returns
/// whether processes were found.
fn empty_cgroup(layout: &Layout, group: &str, name: &WorkloadName) -> bool {
    let Some(cgroup) = Cgroup::existing(layout, group, name.as_str()) else { return false };
    let occupied = cgroup.occupied();
    cgroup.discard();
    occupied
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records that cannot be listed are not "no record": every sandbox a
    /// predecessor left would be taken for unrecorded, and started again
    /// beside the one that runs.
    #[test]
    fn records_that_cannot_be_listed_are_unknown_not_none() {
        let (state, cgroups) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Not a directory: listing it fails, as it does out of descriptors.
        std::fs::write(dir(state.path()), "").unwrap();
        let layout = Layout::V1 { root: cgroups.path().to_owned() };
        let found = recover(state.path(), &layout, &cgroup::workloads_group(state.path()), &["web".to_owned()]);
        assert!(found.unknown.len() == 1 && found.unknown[0].contains("sandbox records"), "{:?}", found.unknown);
        std::fs::remove_file(dir(state.path())).unwrap();
        assert!(
            recover(state.path(), &layout, &cgroup::workloads_group(state.path()), &["web".to_owned()])
                .unknown
                .is_empty()
        );
    }

    /// A pass that had to be made again keeps what it did (a corrupt
    /// record it removed, and the hold that called for, are not there for
    /// the next pass to find); the next pass says what is adopted and what
    /// is still unknown.
    #[test]
    fn what_a_pass_did_is_kept_across_the_next() {
        let name = WorkloadName::try_from("w").unwrap();
        let first = Recovery {
            stopped: vec!["a".into()],
            doubted: vec![(name.clone(), "processes run as its ids".into())],
            unknown: vec!["b: its cgroup cannot be read".into()],
            ..Recovery::default()
        };
        let next = Recovery { stopped: vec!["b".into()], ..Recovery::default() };
        let both = first.then(next);
        assert_eq!(both.stopped, ["a", "b"]);
        assert_eq!(both.doubted.len(), 1);
        assert!(both.unknown.is_empty(), "what is unknown is the last pass's");
    }
}
