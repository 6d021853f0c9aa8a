//! A scan of the workloads directory: which manifests exist and a hash of
//! each one's content, so that a rescan re-validates only files that really
//! changed (an event or a resync tick for an untouched file changes
//! nothing). Also the checks on the inputs that decide what runs as root,
//! at every scan (as sshd's StrictModes): the directory must be root's and
//! not writable by others, and so must every manifest (through a symlink,
//! its target). A scan and its validation run off the event loop
//! (`run_job`), so a large file never keeps the daemon from answering.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use std::sync::Arc;

use super::watch::Writes;
pub use crate::fsutil::{UnsafeInput, check_directory};
use crate::model::{Manifest, WorkloadName};
use crate::reconcile::{Desired, ManifestEvent, Version};
use crate::sandbox::Untrusted;
use crate::validate::load::{self, LoadError, list_manifests};
use crate::validate::{Color, HostChecks, Validator, across, render};

/// What a scan found for one manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Read: its text, the version (content hash) it stands for, and the
    /// file's stamp when it was read (None for a symlink: always read).
    Read { text: Arc<str>, version: Version, stamp: Option<Stamp> },
    /// Present but not usable; the message says why (too large, not UTF-8,
    /// not a regular file, an unsafe symlink, unreadable).
    Refused { message: String },
    /// Present, and its read failed for want of what the host may have
    /// again in a moment (descriptors, memory): it says nothing of the
    /// file. `run_job` takes it as it was before and reads it again soon.
    Unread { message: String },
}

impl Found {
    /// What a change is judged by: the content, or why it is refused.
    fn content(&self) -> (Option<Version>, Option<&str>) {
        match self {
            Found::Read { version, .. } => (Some(*version), None),
            Found::Refused { message } | Found::Unread { message } => (None, Some(message)),
        }
    }
}

/// A file's identity and times: while none of them changes, neither did
/// its content (any write moves ctime), so a rescan need not read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// When the file was last written (seconds, nanoseconds).
    fn mtime(&self) -> (i64, i64) {
        self.mtime
    }

    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The manifests of the directory, by file name.
pub type Snapshot = BTreeMap<String, Found>;

/// FNV-1a, 64 bits: stable across builds and Rust releases, since a
/// version is persisted (a workload held by `paddock stop` stays held
/// until its manifest's version changes, across daemon restarts).
pub fn version_of(text: &str) -> Version {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Version(h)
}

/// A manifest (or, for a symlink, the file it leads to) must be root's and
/// writable by no one else: whoever can write it chooses what runs.
/// `meta` is the file that was read (its open descriptor's), `shown` the
/// path it was found at: a check of the path, then a read through it,
/// would let whoever can swap the file the path leads to (a link into a
/// directory they own) pass the check with root's file and have theirs read.
fn owner_refusal(shown: &Path, meta: &std::fs::Metadata) -> Option<String> {
    crate::fsutil::roots_alone(shown, meta.uid(), meta.mode(), "chooses what paddock runs").err().map(|e| e.to_string())
}

/// Whether a read failed for want of this process's descriptors or the
/// host's memory, which it may have again in a moment: it says nothing of
/// the file. (Not EAGAIN or EINTR: those come from the file's filesystem,
/// a FUSE or network one, and may never end; such a file is refused.)
fn short_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM))
}

/// Scans `dir`. `Err` only when the directory itself cannot be listed.
/// A regular file whose stamp is the one it had in `previous` is not read
/// again (one edit among a thousand files reads one file); pass None to
/// read everything (the periodic resync does, as a safety net).
pub fn scan(dir: &Path, previous: Option<&Snapshot>) -> std::io::Result<Snapshot> {
    let mut snapshot = Snapshot::new();
    for path in list_manifests(dir)? {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        // Taken before the read: a write after it moves the stamp, and the next scan reads again.
        let stamp = std::fs::symlink_metadata(&path).ok().filter(|m| m.is_file()).map(|m| Stamp::of(&m));
        if let Some(found @ Found::Read { stamp: Some(before), .. }) = previous.and_then(|p| p.get(&name))
            && Some(*before) == stamp
        {
            snapshot.insert(name, found.clone());
            continue;
        }
        // As root trusts it: a symlink on the way only where no one but root could have made it.
        let opened = match crate::sandbox::open_trusted(&path) {
            Ok(opened) => Ok(opened),
            Err(e @ Untrusted::Symlink { .. }) => {
                snapshot.insert(name, Found::Refused { message: e.to_string() });
                continue;
            }
            Err(Untrusted::Io(source)) => Err(LoadError::Io { path: path.clone(), source }),
        };
        let read = opened.and_then(|(file, found)| Ok((load::read_open_manifest(file, &path)?, found)));
        let found = match read {
            Ok(((text, meta), found)) => match owner_refusal(&found, &meta) {
                Some(message) => Found::Refused { message },
                None => Found::Read { version: version_of(&text), text: text.into(), stamp },
            },
            Err(LoadError::Invalid(e)) => Found::Refused { message: e.to_string() },
            // A link still there that leads nowhere, or loops, is the
            // operator's file, not a removal: shown, its running version kept.
            Err(LoadError::Io { source, .. }) if let Some(invalid) = load::link_problem(&path, &source) => {
                Found::Refused { message: format!("{} is {invalid}", path.display()) }
            }
            // Gone between listing and reading (an editor's rename): as if
            // it had not been listed; the event that follows rescans.
            Err(LoadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(LoadError::Io { source, .. }) if short_of_resources(&source) => {
                Found::Unread { message: format!("cannot be read for now ({source}): read again in a moment") }
            }
            Err(e) => Found::Refused { message: e.to_string() },
        };
        snapshot.insert(name, found);
    }
    Ok(snapshot)
}

/// `scan`, looked at again while files of `previous` are missing: a file
/// gone may be a save under way (an editor renames the old file away,
/// then writes the new one), so it counts as removed, stopping its
/// workload and ending its hold, only once it was gone in two looks a
/// moment apart (a few more looks while saves follow each other).
pub fn scan_settled(dir: &Path, previous: &BTreeSet<&str>, cache: Option<&Snapshot>) -> std::io::Result<Snapshot> {
    let mut snapshot = scan(dir, cache)?;
    let gone = |snapshot: &Snapshot| -> Vec<String> {
        previous.iter().filter(|file| !snapshot.contains_key(**file)).map(|file| file.to_string()).collect()
    };
    let mut missing = gone(&snapshot);
    for _ in 0..REMOVAL_LOOKS {
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(REMOVAL_SETTLE);
        snapshot = scan(dir, Some(&snapshot))?;
        let now = gone(&snapshot);
        if now.iter().all(|file| missing.contains(file)) {
            break;
        }
        missing = now;
    }
    Ok(snapshot)
}

/// What a rescan found for one changed file.
#[derive(Debug, Clone)]
pub struct FileChange {
    pub file: String,
    /// The workload it names (None: the file name is not a valid name).
    pub name: Option<WorkloadName>,
    pub event: ManifestEvent,
    /// A valid file's warnings, as `check` shows them (an invalid file's
    /// problems hold its warnings).
    pub warnings: Option<String>,
}

impl FileChange {
    /// What `file` of `snapshot` means now (`event`), for the workload it names.
    pub fn of(dir: &Path, file: &str, snapshot: &Snapshot, validator: &Validator) -> Self {
        let (event, warnings) = event(dir, file, snapshot.get(file), validator);
        FileChange {
            file: file.to_owned(),
            name: WorkloadName::stem_of_manifest_file(file).and_then(|s| WorkloadName::try_from(s).ok()),
            event,
            warnings,
        }
    }
}

/// A rescan's result, made off the event loop.
#[derive(Debug)]
pub struct Outcome {
    pub snapshot: Snapshot,
    pub changes: Vec<FileChange>,
    /// The directory is unsafe (or cannot be listed): nothing is applied.
    pub refused: Option<String>,
    /// Adopted sandboxes whose file is invalid, with the manifest each was
    /// started from (its record's, valid still): they run on with it.
    pub kept: Vec<(WorkloadName, Desired)>,
    /// Files being written, taken as they were before (a new one not yet).
    pub withheld: BTreeSet<String>,
    /// Adopted sandboxes whose file is now another version, or gone, with
    /// the manifest each was started from (its record's): the version that
    /// runs, whose stop signal and timeout stop it.
    pub adopted_runs: Vec<(WorkloadName, Desired)>,
    /// Files seen gone, since when, taken as they were until they have
    /// stayed gone `REMOVAL_SETTLE`: to be looked at again then (`gone_until`).
    pub gone: BTreeMap<String, std::time::Instant>,
    /// The directory's files that are not manifests (not `*.toml`), which
    /// the daemon does not read: said, not silently ignored.
    pub not_read: BTreeSet<String>,
    /// Files whose read failed for want of descriptors or memory, with
    /// why: taken as they were (`Found::Unread`).
    pub unread: BTreeMap<String, String>,
    /// A read of this scan (a file's, or the directory's: then `refused`
    /// says why) failed for want of descriptors or memory: the rescan to
    /// take again in a moment (as much as this one read).
    pub again: Option<Rescan>,
}

impl Outcome {
    /// When the files seen gone are to be looked at again, if any are.
    pub fn gone_until(&self) -> Option<std::time::Instant> {
        self.gone.values().min().map(|since| *since + REMOVAL_SETTLE)
    }

    /// Nothing applied, for why.
    pub fn refused(snapshot: Snapshot, why: String) -> Self {
        Outcome {
            snapshot,
            changes: Vec::new(),
            refused: Some(why),
            kept: Vec::new(),
            withheld: BTreeSet::new(),
            adopted_runs: Vec::new(),
            gone: BTreeMap::new(),
            not_read: BTreeSet::new(),
            unread: BTreeMap::new(),
            again: None,
        }
    }
}

/// What the daemon holds when it asks for a rescan.
#[derive(Debug, Default)]
pub struct Held {
    /// The manifests that keep their ports and start order (`claims`).
    pub settled: Vec<(String, Arc<Manifest>)>,
    /// The files of the workloads that run now.
    pub running: Vec<String>,
    /// The files invalid now, with their problems as rendered: validated
    /// again on a full rescan, or when a file they name changes.
    pub invalid: BTreeMap<String, String>,
    /// Only for the first scan after adopting sandboxes: the text each
    /// was started from (its record's), by file.
    pub recorded: BTreeMap<String, Arc<str>>,
    /// Only for the first scan: the files of the workloads whose kept
    /// state (a hold, how a run ended) was restored, looked for again
    /// when missing, as any file of the scan before is.
    pub restored: Vec<String>,
    /// What the watcher saw of writes: a file being written, or written
    /// to while the scan read it, is taken as it was before (a new one
    /// not yet), so that a file written in parts is never applied
    /// half-written.
    pub writes: Option<Arc<Writes>>,
    /// Files a scan before saw gone, since when (`Outcome::gone`).
    pub gone: BTreeMap<String, std::time::Instant>,
}

/// How long a file seen gone is given to come back before it counts as
/// removed.
const REMOVAL_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);
/// At most this many looks again, while files keep going.
const REMOVAL_LOOKS: usize = 10;

/// How much a rescan reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rescan {
    /// Files whose stamp (inode, size, times) moved: after a file event.
    #[default]
    Changed,
    /// Every file: the periodic resync, SIGHUP, `paddock reload`, an
    /// inotify overflow (a safety net for changes no stamp shows).
    Everything,
}

/// Scans `dir` and validates the files that changed since `previous`; on
/// a full rescan, also those invalid now (`held.invalid`), which the host
/// may have made valid since (a mount source or rootfs created, a CNI
/// network added, a port freed), reported only when what they are
/// differs. An adopted sandbox whose file is invalid is `kept` with the
/// manifest it was started from (`held.recorded`), if that is valid
/// still; it keeps its ports against the other files. Blocking: run it
/// on a blocking thread.
pub fn run_job(dir: &Path, previous: &Snapshot, rescan: Rescan, validator: &Validator, held: &Held) -> Outcome {
    let Held { settled, running, invalid, recorded, restored, writes, gone } = held;
    let begun = std::time::Instant::now();
    let full = rescan == Rescan::Everything;
    // Nothing is applied, and what runs keeps running: an adopted sandbox
    // with the manifest it was started from.
    let refused = |why: String| {
        let kept = keep_recorded(recorded.keys().map(String::as_str), recorded, validator, &mut BTreeSet::new());
        let kept = kept.into_iter().map(|(_, name, desired)| (name, desired)).collect();
        Outcome { kept, ..Outcome::refused(previous.clone(), why) }
    };
    if let Err(e) = check_directory(dir) {
        return refused(e.to_string());
    }
    // After a daemon's start, what its predecessor ran (and kept) stands
    // for the scan before: a file of it briefly gone (an editor's save)
    // is looked for again, and one being written is taken as the version
    // that runs, as in any later scan.
    let before: Snapshot = recorded
        .iter()
        .map(|(file, text)| {
            let found = Found::Read { text: text.clone(), version: version_of(text), stamp: None };
            (file.clone(), found)
        })
        .chain(previous.iter().map(|(file, found)| (file.clone(), found.clone())))
        .collect();
    let expected: BTreeSet<&str> =
        before.keys().map(String::as_str).chain(restored.iter().map(String::as_str)).collect();
    // A file seen gone may be a save that renames the old file away
    // before it writes the new one: taken as it was until it has stayed
    // gone REMOVAL_SETTLE, and looked at again then, while the other
    // files' changes apply now. A full rescan (the daemon's first, a
    // reload, SIGHUP, the resync) waits here instead: what it finds is
    // what it reports, and what READY=1 says runs.
    let cache = (!full).then_some(previous);
    let waited = full;
    let scanned = if waited { scan_settled(dir, &expected, cache) } else { scan(dir, cache) };
    let mut snapshot = match scanned {
        Ok(s) => s,
        Err(e) => {
            let again = short_of_resources(&e).then_some(rescan);
            return Outcome { again, ..refused(format!("cannot scan {}: {e}", dir.display())) };
        }
    };
    let now = std::time::Instant::now();
    let mut still_gone = BTreeMap::new();
    for (file, found) in before.iter().filter(|_| !waited) {
        let since = gone.get(file).copied().unwrap_or(now);
        if !snapshot.contains_key(file) && now.saturating_duration_since(since) < REMOVAL_SETTLE {
            snapshot.insert(file.clone(), found.clone());
            still_gone.insert(file.clone(), since);
        }
    }
    // Looked at once every file was read: a write that began meanwhile counts.
    let withheld: BTreeSet<String> = writes.as_ref().map(|w| w.withheld(begun)).unwrap_or_default();
    for file in &withheld {
        match (snapshot.contains_key(file), before.get(file)) {
            (false, _) => {}
            (true, Some(before)) => drop(snapshot.insert(file.clone(), before.clone())),
            // A workload known only from kept state (held, or its run
            // ended): not taken as gone, which would forget that state.
            (true, None) if restored.contains(file) => {
                let message = "being written: read again once the write ends".to_owned();
                drop(snapshot.insert(file.clone(), Found::Refused { message }));
            }
            (true, None) => drop(snapshot.remove(file)),
        }
    }
    // A file whose read failed for want of descriptors or memory is taken
    // as it was (a new one is said so, as a file that cannot be read) and
    // read again in a moment (`Outcome::again`), not left invalid until
    // the next full rescan.
    let unread: BTreeMap<String, String> = snapshot
        .iter()
        .filter_map(|(file, found)| match found {
            Found::Unread { message } => Some((file.clone(), message.clone())),
            _ => None,
        })
        .collect();
    for file in unread.keys() {
        if let Some(before) = before.get(file) {
            snapshot.insert(file.clone(), before.clone());
        }
    }
    let mut changes: Vec<FileChange> =
        changed(previous, &snapshot).into_iter().map(|file| FileChange::of(dir, file, &snapshot, validator)).collect();
    // Validated again: every invalid file on a full rescan; on any scan,
    // one refused for a port a changed file published (removed, or its
    // ports edited), which was left refused until the next full rescan.
    let refused_for_a_change =
        |problems: &str| changes.iter().any(|c| problems.contains(&format!("is already published by {} (", c.file)));
    let again: Vec<&str> = invalid
        .iter()
        .filter(|(_, problems)| full || refused_for_a_change(problems))
        .map(|(file, _)| file.as_str())
        .filter(|file| matches!(snapshot.get(*file), Some(Found::Read { .. })))
        .filter(|file| !changes.iter().any(|c| c.file == *file))
        .collect();
    changes.extend(again.iter().map(|file| FileChange::of(dir, file, &snapshot, validator)));
    // Judged as if the files seen gone were removed too, when any are.
    let mut without_gone = (!still_gone.is_empty()).then(|| changes.clone());
    let kept = refuse_conflicts(dir, &snapshot, &mut changes, settled, running, recorded, validator);
    // A file refused for what a file seen gone holds waits with it (a
    // rename: web.toml moved to web2.toml, its ports with it): taken as it
    // was until the gone one is looked at again, and validated then,
    // rather than refused until the next full rescan. One refused for what
    // another holds is refused at once.
    if let Some(trial) = &mut without_gone {
        let others: Vec<(String, Arc<Manifest>)> =
            settled.iter().filter(|(file, _)| !still_gone.contains_key(file)).cloned().collect();
        refuse_conflicts(dir, &snapshot, trial, &others, running, recorded, validator);
        let deferred: BTreeSet<String> = changes
            .iter()
            .zip(trial.iter())
            .filter(|(c, t)| matches!(c.event, ManifestEvent::Invalid(_)) && matches!(t.event, ManifestEvent::Valid(_)))
            .filter(|(c, _)| {
                let name = WorkloadName::stem_of_manifest_file(&c.file);
                !kept.iter().any(|(kept, _)| Some(kept.as_str()) == name)
            })
            .map(|(c, _)| c.file.clone())
            .collect();
        for file in &deferred {
            match before.get(file) {
                Some(before) => drop(snapshot.insert(file.clone(), before.clone())),
                None => drop(snapshot.remove(file)),
            }
        }
        changes.retain(|c| !deferred.contains(&c.file));
    }
    // Validated again and still invalid for the same reasons: no change.
    changes.retain(|c| {
        !again.contains(&c.file.as_str())
            || !matches!(&c.event, ManifestEvent::Invalid(now) if invalid.get(&c.file) == Some(now))
    });
    let adopted_runs = adopted_runs(recorded, &snapshot, &kept, validator);
    let not_read = crate::validate::load::not_manifests(dir)
        .into_iter()
        .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .collect();
    let again = (!unread.is_empty()).then_some(rescan);
    Outcome {
        snapshot,
        changes,
        refused: None,
        kept,
        withheld,
        adopted_runs,
        gone: still_gone,
        not_read,
        unread,
        again,
    }
}

/// The manifests the adopted sandboxes whose file is now another version
/// (or gone) run: their records', checked as a file would be (or, no
/// longer passing today's host checks, without them: what matters is how
/// the version that runs is stopped).
/// (Those `kept` on their recorded manifest already are not read again.)
fn adopted_runs(
    recorded: &BTreeMap<String, Arc<str>>,
    snapshot: &Snapshot,
    kept: &[(WorkloadName, Desired)],
    validator: &Validator,
) -> Vec<(WorkloadName, Desired)> {
    let mut runs = Vec::new();
    for (file, source) in recorded {
        let version = version_of(source);
        if matches!(snapshot.get(file), Some(Found::Read { version: now, .. }) if *now == version) {
            continue;
        }
        let Some(name) = WorkloadName::stem_of_manifest_file(file).and_then(|s| WorkloadName::try_from(s).ok()) else {
            continue;
        };
        if kept.iter().any(|(k, _)| *k == name) {
            continue;
        }
        // Read as a file would be; else without today's host checks; else
        // (today's policies refuse it) as it reads, for its `[stop]`.
        let manifest = validator
            .validate(file, source, HostChecks::Require)
            .spec
            .or_else(|| validator.validate(file, source, HostChecks::Skip).spec)
            .map(|spec| spec.manifest)
            // (Only its stop is wanted: no health checks for it meanwhile.)
            .or_else(|| toml::from_str::<Manifest>(source).ok().map(|m| Manifest { health: None, ..m }));
        if let Some(manifest) = manifest {
            runs.push((name, Desired { version, manifest: Arc::new(manifest), source: source.clone() }));
        }
    }
    runs
}

/// Refuses the valid changes that want what runs keeps: its ports and its
/// place in the start order. What runs on is each workload whose change
/// is not valid, with the version it had (`settled`, by file), or, for an
/// adopted sandbox, the manifest it was started from (`recorded`), which
/// is returned when it is kept. A change refused here whose workload has
/// such a version leaves it running on, holding what it held: the check
/// is made again, from the changes as they were, with those versions
/// among what holds, until no more of them is refused. Each round checks
/// the changes against what holds first, and against each other only
/// once that refuses no more: a refusal that only another change's new
/// version caused is made again each round, so it does not outlast that
/// change's own refusal. (One such refusal of a change with an old
/// version stands; it fails closed: the old version runs on.)
pub fn refuse_conflicts(
    dir: &Path,
    snapshot: &Snapshot,
    changes: &mut [FileChange],
    settled: &[(String, Arc<Manifest>)],
    running: &[String],
    recorded: &BTreeMap<String, Arc<str>>,
    validator: &Validator,
) -> Vec<(WorkloadName, Desired)> {
    let running: Vec<&str> = running.iter().map(String::as_str).collect();
    let original: Vec<ManifestEvent> = changes.iter().map(|c| c.event.clone()).collect();
    let as_written = reworded_records(snapshot, changes, recorded, validator);
    let has_old = |file: &str| settled.iter().any(|(f, _)| f == file) || recorded.contains_key(file);
    // Refused, with an old version that runs on instead: by file, the refusal.
    let mut held_back: BTreeMap<String, ManifestEvent> = BTreeMap::new();
    let (mut kept, mut tried) = (Vec::new(), BTreeSet::new());
    loop {
        for (change, event) in changes.iter_mut().zip(&original) {
            change.event = held_back.get(&change.file).unwrap_or(event).clone();
        }
        let refused_now =
            changes.iter().filter(|c| matches!(c.event, ManifestEvent::Invalid(_))).map(|c| c.file.as_str());
        let more = keep_recorded(refused_now, recorded, validator, &mut tried);
        kept.extend(more);
        let holding: Vec<(&str, &Manifest)> = settled
            .iter()
            .filter(|(file, _)| {
                !changes
                    .iter()
                    .any(|c| c.file == *file && matches!(c.event, ManifestEvent::Valid(_) | ManifestEvent::Removed))
            })
            .map(|(file, m)| (file.as_str(), &**m))
            .chain(kept.iter().map(|(file, _, d)| (file.as_str(), &*d.manifest)))
            .collect();
        let newly = |changes: &[FileChange], held_back: &BTreeMap<String, ManifestEvent>| {
            changes
                .iter()
                .zip(&original)
                .filter(|(c, was)| {
                    matches!(was, ManifestEvent::Valid(_)) && matches!(c.event, ManifestEvent::Invalid(_))
                })
                .filter(|(c, _)| !held_back.contains_key(&c.file) && has_old(&c.file))
                .map(|(c, _)| (c.file.clone(), c.event.clone()))
                .collect::<Vec<_>>()
        };
        // First each change against what holds alone: such a refusal
        // stands whatever the other changes come to.
        for change in changes.iter_mut().filter(|c| matches!(c.event, ManifestEvent::Valid(_))) {
            refuse_port_conflicts(dir, snapshot, std::slice::from_mut(change), &holding, &running, &as_written);
        }
        let first = newly(changes, &held_back);
        if !first.is_empty() {
            held_back.extend(first);
            continue;
        }
        // Then the changes against each other.
        refuse_port_conflicts(dir, snapshot, changes, &holding, &running, &as_written);
        let then = newly(changes, &held_back);
        if then.is_empty() {
            break;
        }
        held_back.extend(then);
    }
    kept.into_iter().map(|(_, name, desired)| (name, desired)).collect()
}

/// `recorded`, with the file's text for the record's where the file was
/// reworded while no daemon ran (valid, and the same manifest once read:
/// `Desired::reworded_as`): its sandbox runs what it says, and keeps its
/// ports against a newcomer as one whose file is its record's text does.
fn reworded_records(
    snapshot: &Snapshot,
    changes: &[FileChange],
    recorded: &BTreeMap<String, Arc<str>>,
    validator: &Validator,
) -> BTreeMap<String, Arc<str>> {
    let mut as_written = recorded.clone();
    for change in changes {
        let (Some(text), ManifestEvent::Valid(now), Some(Found::Read { text: file_text, .. })) =
            (as_written.get_mut(&change.file), &change.event, snapshot.get(&change.file))
        else {
            continue;
        };
        if **text == **file_text {
            continue;
        }
        // Only the manifest is compared: checked as it reads, not against this host.
        let Some(name) = &change.name else { continue };
        let spec = validator.validate(&change.file, text, HostChecks::Skip).spec;
        if spec.is_some_and(|spec| spec.manifest.reads_as(&now.manifest, name.as_str())) {
            *text = file_text.clone();
        }
    }
    as_written
}

/// For each of `files` that is an adopted sandbox's (and was not `tried`
/// before), the manifest the sandbox was started from (`recorded`, by
/// file), validated as the file would be: kept if it passes, so the
/// version that runs is not taken down by a bad edit made while no daemon
/// ran.
fn keep_recorded<'a>(
    files: impl Iterator<Item = &'a str>,
    recorded: &BTreeMap<String, Arc<str>>,
    validator: &Validator,
    tried: &mut BTreeSet<String>,
) -> Vec<(String, WorkloadName, Desired)> {
    let mut kept = Vec::new();
    for file in files {
        let Some(source) = recorded.get(file) else { continue };
        let Some(name) = WorkloadName::stem_of_manifest_file(file).and_then(|s| WorkloadName::try_from(s).ok()) else {
            continue;
        };
        if !tried.insert(file.to_owned()) {
            continue;
        }
        let checked = validator.validate_started(file, source);
        match checked.spec {
            Some(spec) => {
                let version = version_of(source);
                let desired = Desired { version, manifest: Arc::new(spec.manifest), source: source.clone() };
                kept.push((file.to_owned(), name, desired));
            }
            None => {
                let shown = format!("the manifest its sandbox was started from ({file}, kept in its record)");
                let rendered: String =
                    checked.problems.iter().map(|p| render(p, &shown, source, Color::Never)).collect();
                tracing::warn!(
                    workload = %name,
                    "{file} cannot be used, and the manifest its sandbox was started from does not pass today's checks: it is stopped; fix {file} to start it again\n{}",
                    rendered.trim_end()
                );
            }
        }
    }
    kept
}

/// Turns the valid changes whose published ports collide with another's
/// (a settled workload's, or a change that comes first) into invalid
/// ones, saying which file holds the port; and those whose `after`
/// closes a cycle. Of two changes, the one that comes first keeps the
/// port: a file whose workload runs what it says (`running`, and, for an
/// adopted sandbox, its `recorded` text), then the older file, then the
/// name. Both were refused: after a daemon's restart, a bad edit of one
/// file took down the workload of the other, which it had not touched.
pub fn refuse_port_conflicts(
    dir: &Path,
    snapshot: &Snapshot,
    changes: &mut [FileChange],
    settled: &[(&str, &Manifest)],
    running: &[&str],
    recorded: &BTreeMap<String, Arc<str>>,
) {
    let rank = |file: &str| {
        let (text, written) = match snapshot.get(file) {
            Some(Found::Read { text, stamp, .. }) => (Some(text), stamp.as_ref().map(Stamp::mtime)),
            _ => (None, None),
        };
        let runs_as_written =
            running.contains(&file) && recorded.get(file).is_none_or(|r| text.is_some_and(|t| **r == **t));
        // A file read through a link has no stamp: taken as the newest.
        (!runs_as_written, written.unwrap_or((i64::MAX, 0)))
    };
    let precedes = |a: &str, b: &str| (rank(a), a) < (rank(b), b);
    let candidates: Vec<across::Candidate<'_>> = changes
        .iter()
        .filter_map(|c| match (&c.event, snapshot.get(&c.file)) {
            (ManifestEvent::Valid(desired), Some(Found::Read { text, .. })) => {
                Some(across::Candidate { file: &c.file, text, manifest: &desired.manifest })
            }
            _ => None,
        })
        .collect();
    let mut conflicts = across::port_conflicts(&candidates, settled, &precedes);
    for (file, mut found) in across::order_problems(&candidates, settled, across::UnknownAfter::Waits) {
        conflicts.entry(file).or_default().append(&mut found);
    }
    for change in changes.iter_mut() {
        if let (Some(problems), Some(Found::Read { text, .. })) =
            (conflicts.get(&change.file), snapshot.get(&change.file))
        {
            let shown = dir.join(&change.file).display().to_string();
            let rendered: String = problems.iter().map(|p| render(p, &shown, text, Color::Never)).collect();
            change.event = ManifestEvent::Invalid(rendered.trim_end().to_owned());
        }
    }
}

/// What one file means now, and a valid one's warnings (rendered as
/// `check` renders them).
fn event(dir: &Path, file: &str, found: Option<&Found>, validator: &Validator) -> (ManifestEvent, Option<String>) {
    let shown = dir.join(file).display().to_string();
    match found {
        None => (ManifestEvent::Removed, None),
        Some(Found::Refused { message } | Found::Unread { message }) => {
            (ManifestEvent::Invalid(format!("{shown}: {message}")), None)
        }
        Some(Found::Read { text, version, .. }) => {
            let checked = validator.validate(file, text, HostChecks::Require);
            let rendered: String = checked.problems.iter().map(|p| render(p, &shown, text, Color::Never)).collect();
            let rendered = rendered.trim_end().to_owned();
            match checked.spec {
                Some(spec) => {
                    let desired =
                        Desired { version: *version, manifest: Arc::new(spec.manifest), source: text.clone() };
                    (ManifestEvent::Valid(desired), Some(rendered).filter(|r| !r.is_empty()))
                }
                None => (ManifestEvent::Invalid(rendered), None),
            }
        }
    }
}

fn content<'a>(s: &'a Snapshot, name: &str) -> Option<(Option<Version>, Option<&'a str>)> {
    s.get(name).map(Found::content)
}

/// The files whose content differs between two scans (added, changed or
/// removed), by name: the only ones worth validating again.
pub fn changed<'a>(before: &'a Snapshot, after: &'a Snapshot) -> Vec<&'a str> {
    let mut names: Vec<&str> = before
        .keys()
        .chain(after.keys())
        .map(String::as_str)
        .filter(|n| content(before, n) != content(after, n))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Only this process's want of descriptors, or the host's of memory,
    /// keeps a file as it was: EAGAIN and EINTR come from its filesystem
    /// (a FUSE or network one) and may never end.
    #[test]
    fn only_a_want_of_descriptors_or_memory_leaves_a_file_unread() {
        let e = std::io::Error::from_raw_os_error;
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            assert!(short_of_resources(&e(errno)), "{errno}");
        }
        for errno in [libc::EAGAIN, libc::EINTR, libc::EIO, libc::EACCES] {
            assert!(!short_of_resources(&e(errno)), "{errno}");
        }
    }

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn only_changed_files_differ_between_scans() {
        let d = dir();
        std::fs::write(d.path().join("a.toml"), "command = [\"a\"]\n").unwrap();
        std::fs::write(d.path().join("b.toml"), "command = [\"b\"]\n").unwrap();
        std::fs::write(d.path().join(".a.toml.swp"), "junk").unwrap();
        let first = scan(d.path(), None).unwrap();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["a.toml", "b.toml"]);
        assert!(
            changed(&first, &scan(d.path(), None).unwrap()).is_empty(),
            "a rescan of untouched files changes nothing"
        );
        // An editor's atomic save of the same bytes is no change either.
        std::fs::write(d.path().join("a.toml.tmp"), "command = [\"a\"]\n").unwrap();
        std::fs::rename(d.path().join("a.toml.tmp"), d.path().join("a.toml")).unwrap();
        assert!(changed(&first, &scan(d.path(), None).unwrap()).is_empty());
        std::fs::write(d.path().join("b.toml"), "command = [\"b2\"]\n").unwrap();
        std::fs::write(d.path().join("c.toml"), "command = [\"c\"]\n").unwrap();
        std::fs::remove_file(d.path().join("a.toml")).unwrap();
        assert_eq!(changed(&first, &scan(d.path(), None).unwrap()), ["a.toml", "b.toml", "c.toml"]);
    }

    #[test]
    fn a_rescan_reads_only_files_whose_stamp_moved() {
        let d = dir();
        std::fs::write(d.path().join("a.toml"), "command = [\"a\"]\n").unwrap();
        std::fs::write(d.path().join("b.toml"), "command = [\"b\"]\n").unwrap();
        let mut first = scan(d.path(), None).unwrap();
        // Doctor what the first scan remembers: a rescan that reuses it did not read.
        for found in first.values_mut() {
            if let Found::Read { text, version, .. } = found {
                *text = "remembered".into();
                *version = Version(7);
            }
        }
        std::fs::write(d.path().join("b.toml"), "command = [\"B\"]\n").unwrap();
        let second = scan(d.path(), Some(&first)).unwrap();
        assert!(
            matches!(&second["a.toml"], Found::Read { text, .. } if &**text == "remembered"),
            "a.toml was not read"
        );
        assert!(matches!(&second["b.toml"], Found::Read { text, .. } if text.contains("\"B\"")), "b.toml was");
        // Without a previous scan (the periodic resync), everything is read.
        assert!(matches!(&scan(d.path(), None).unwrap()["a.toml"], Found::Read { text, .. } if text.contains("\"a\"")));
    }

    #[test]
    fn unusable_files_are_refused_with_a_reason() {
        let d = dir();
        std::fs::write(d.path().join("big.toml"), vec![b'#'; 2 << 20]).unwrap();
        std::fs::create_dir(d.path().join("dir.toml")).unwrap();
        // A device no driver answers (major 240, for local use), linked to
        // as root could: refused by its type, never opened.
        let dev = d.path().join("dev");
        nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(240, 0),
        )
        .expect("mknod (this test needs root)");
        std::os::unix::fs::symlink(&dev, d.path().join("dev.toml")).unwrap();
        let s = scan(d.path(), None).unwrap();
        assert!(matches!(&s["big.toml"], Found::Refused { message } if message.contains("limited to 1048576 bytes")));
        assert!(
            matches!(&s["dir.toml"], Found::Refused { message } if message.contains("a directory is not a manifest"))
        );
        assert!(
            matches!(&s["dev.toml"], Found::Refused { message } if message.contains("a device is not a manifest")),
            "{s:?}"
        );
    }

    /// A `NAME.toml` that is a link leading nowhere (its target removed, a
    /// commit that linked to a file it did not add) is a file the operator
    /// put there: shown as invalid, saying so, not taken for a removed
    /// file, which would stop its workload without a word.
    #[test]
    fn a_link_that_leads_nowhere_is_refused_not_taken_for_removed() {
        let d = dir();
        let target = d.path().join("common").join("web.toml");
        std::os::unix::fs::symlink(&target, d.path().join("web.toml")).unwrap();
        let s = scan(d.path(), None).unwrap();
        assert!(
            matches!(&s.get("web.toml"), Some(Found::Refused { message })
                if message.contains(&target.display().to_string()) && message.contains("no file is there")),
            "{s:?}"
        );
    }

    /// So is one that loops (it leads back to itself): refused saying
    /// so, not "cannot read ...: Too many levels of symbolic links".
    #[test]
    fn a_link_that_loops_is_refused_saying_so() {
        let d = dir();
        std::os::unix::fs::symlink("api.toml", d.path().join("web.toml")).unwrap();
        std::os::unix::fs::symlink("web.toml", d.path().join("api.toml")).unwrap();
        let s = scan(d.path(), None).unwrap();
        for (name, target) in [("web.toml", "api.toml"), ("api.toml", "web.toml")] {
            assert!(
                matches!(&s.get(name), Some(Found::Refused { message })
                    if message.ends_with(&format!("is a symbolic link to {target}, which loops (too many levels of links): make it lead to a manifest, or remove it"))),
                "{s:?}"
            );
        }
    }

    #[test]
    fn every_manifest_must_be_roots_and_writable_by_root_alone() {
        let d = dir();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("web.toml");
        std::fs::write(&target, "command = [\"x\"]\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("web.toml")).unwrap();
        assert!(matches!(scan(d.path(), None).unwrap()["web.toml"], Found::Read { .. }), "root's file is followed");
        std::os::unix::fs::chown(&target, Some(1000), None).unwrap();
        let s = scan(d.path(), None).unwrap();
        assert!(matches!(&s["web.toml"], Found::Refused { message } if message.contains("owned by uid 1000")), "{s:?}");
        // Inside the directory too (a ConfigMap's ..data links are root's).
        std::fs::write(d.path().join("api.toml"), "command = [\"x\"]\n").unwrap();
        std::os::unix::fs::chown(d.path().join("api.toml"), Some(65534), None).unwrap();
        let s = scan(d.path(), None).unwrap();
        assert!(matches!(&s["api.toml"], Found::Refused { message } if message.contains("chown root")), "{s:?}");
        std::os::unix::fs::chown(d.path().join("api.toml"), Some(0), None).unwrap();
        std::fs::set_permissions(d.path().join("api.toml"), std::fs::Permissions::from_mode(0o646)).unwrap();
        let s = scan(d.path(), None).unwrap();
        assert!(matches!(&s["api.toml"], Found::Refused { message } if message.contains("chmod go-w")), "{s:?}");
    }

    #[test]
    fn a_file_swapped_in_after_the_owner_check_is_never_read_as_roots() {
        assert!(nix::unistd::geteuid().is_root(), "this test makes files of another owner and must run as root");
        // The link leads into a directory its owner controls: they swap
        // root's file and theirs (RENAME_EXCHANGE) as fast as they can.
        let d = dir();
        let theirs = tempfile::tempdir().unwrap();
        let (good, bad) = (theirs.path().join("web.toml"), theirs.path().join("spare"));
        std::fs::write(&good, "command = [\"/bin/roots\"]\n").unwrap();
        std::fs::write(&bad, "command = [\"/bin/theirs\"]\n").unwrap();
        for f in [&good, &bad] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::os::unix::fs::chown(&bad, Some(65534), None).unwrap();
        std::os::unix::fs::chown(theirs.path(), Some(65534), None).unwrap();
        std::os::unix::fs::symlink(&good, d.path().join("web.toml")).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, a, b) = (
                stop.clone(),
                std::ffi::CString::new(good.as_os_str().as_encoded_bytes()).unwrap(),
                std::ffi::CString::new(bad.as_os_str().as_encoded_bytes()).unwrap(),
            );
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: renameat2 on two NUL-terminated paths we own.
                    let rc = unsafe {
                        libc::syscall(
                            libc::SYS_renameat2,
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
                    swaps += 1;
                }
                swaps
            })
        };
        let (mut roots, mut refused) = (0, 0);
        // At least 3000 scans, and until both files were seen (a busy
        // machine may not run the swapper at once).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while roots + refused < 3000 || (roots == 0 || refused == 0) && std::time::Instant::now() < deadline {
            match &scan(d.path(), None).unwrap()["web.toml"] {
                Found::Read { text, .. } => {
                    assert!(text.contains("/bin/roots"), "their file was read as root's: {text}");
                    roots += 1;
                }
                Found::Refused { message } => {
                    assert!(message.contains("owned by uid 65534"), "{message}");
                    refused += 1;
                }
                Found::Unread { message } => panic!("{message}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(
            swaps > 1000 && roots > 0 && refused > 0,
            "the race was run: {swaps} swaps, {roots} read, {refused} refused"
        );
    }

    #[test]
    fn a_link_someone_else_could_have_made_is_not_followed_to_roots_files() {
        // web.toml leads into a directory uid 65534 owns; there, their own
        // link points at a file of root's (a manifest meant for another
        // host, say): followed, it would run as if root had put it here.
        let d = dir();
        let (theirs, roots) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let other = roots.path().join("other.toml");
        std::fs::write(&other, "command = [\"/bin/other-hosts\"]\n").unwrap();
        std::fs::set_permissions(theirs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(theirs.path(), Some(65534), None).unwrap();
        let link = theirs.path().join("app.toml");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        std::os::unix::fs::symlink(&link, d.path().join("web.toml")).unwrap();
        let s = scan(d.path(), None).unwrap();
        let Found::Refused { message } = &s["web.toml"] else { panic!("followed their link: {s:?}") };
        assert!(message.contains(&format!("reached through {}", link.display())), "{message}");
        assert!(message.contains("someone other than root could have made"), "{message}");
        // Root's own file in their directory is still root's file (they can
        // neither write it nor, with protected hard links, link others' in).
        std::fs::remove_file(&link).unwrap();
        std::fs::copy(&other, &link).unwrap();
        assert!(matches!(&scan(d.path(), None).unwrap()["web.toml"], Found::Read { .. }));
    }

    #[test]
    fn unsafe_directories_are_refused_with_the_fix() {
        let d = dir();
        assert!(check_directory(d.path()).is_ok());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_directory(d.path()).unwrap_err().to_string();
        assert!(err.contains("is writable by group and others (mode 0777)") && err.contains("chmod go-w"), "{err}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(check_directory(d.path()).unwrap_err().to_string().contains("writable by its group"));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(d.path(), Some(1000), None).unwrap();
        let err = check_directory(d.path()).unwrap_err().to_string();
        assert!(err.contains("is owned by uid 1000, not root") && err.contains("chown root"), "{err}");
        assert!(matches!(check_directory(&d.path().join("missing")), Err(UnsafeInput::Stat { .. })));
    }

    /// A file seen gone is taken as it was until it has stayed gone
    /// REMOVAL_SETTLE (a save that renames it away first), without holding
    /// back the other files' changes: a removal and an addition made
    /// together apply the addition at once.
    #[test]
    fn a_file_seen_gone_waits_to_count_as_removed_and_holds_back_nothing_else() {
        let d = dir();
        let validator = Validator::new(Vec::new());
        std::fs::write(d.path().join("old.toml"), "command = [\"/bin/true\"]\n").unwrap();
        let scan_with = |previous: &Snapshot, gone: BTreeMap<String, std::time::Instant>| {
            let held = Held { gone, ..Held::default() };
            run_job(d.path(), previous, Rescan::Changed, &validator, &held)
        };
        let first = scan_with(&Snapshot::new(), BTreeMap::new());
        std::fs::remove_file(d.path().join("old.toml")).unwrap();
        std::fs::write(d.path().join("new.toml"), "command = [\"/bin/true\"]\n").unwrap();
        let began = std::time::Instant::now();
        let second = scan_with(&first.snapshot, BTreeMap::new());
        assert!(began.elapsed() < REMOVAL_SETTLE, "the scan waited: {:?}", began.elapsed());
        let files: Vec<&str> = second.changes.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(files, ["new.toml"], "the addition applies, the removal waits");
        assert!(second.snapshot.contains_key("old.toml"));
        let until = second.gone_until().expect("looked at again");
        assert!(until > began && until <= std::time::Instant::now() + REMOVAL_SETTLE);
        // Back in time: nothing changed, nothing waits.
        std::fs::write(d.path().join("old.toml"), "command = [\"/bin/true\"]\n").unwrap();
        let back = scan_with(&second.snapshot, second.gone.clone());
        assert!(back.changes.is_empty() && back.gone.is_empty(), "{:?}", back.changes);
        // Gone for REMOVAL_SETTLE: removed.
        std::fs::remove_file(d.path().join("old.toml")).unwrap();
        let long_ago = std::time::Instant::now() - REMOVAL_SETTLE;
        let third = scan_with(&back.snapshot, BTreeMap::from([("old.toml".to_owned(), long_ago)]));
        let files: Vec<&str> = third.changes.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(files, ["old.toml"]);
        assert!(!third.snapshot.contains_key("old.toml") && third.gone.is_empty());
    }

    /// A rename (web.toml moved to web2.toml, its ports with it): while the
    /// gone file is taken as it was, the new one is not refused for the
    /// ports it holds but waits with it, and is valid once the gone one
    /// counts as removed (not refused until the next full rescan). A
    /// conflict with a file that is not gone is refused at once.
    #[test]
    fn a_renamed_file_waits_for_the_file_it_left_rather_than_conflict_with_it() {
        let (d, root) = (dir(), tempfile::tempdir().unwrap());
        let manifest = |port: u16| {
            format!("command = [\"/bin/sleep\"]\nrootfs = {{ path = {:?} }}\nports = [\"{port}:80\"]\n", root.path())
        };
        std::fs::write(d.path().join("web.toml"), manifest(8080)).unwrap();
        std::fs::write(d.path().join("db.toml"), manifest(9090)).unwrap();
        let validator = Validator::new(Vec::new());
        let first = run_job(d.path(), &Snapshot::new(), Rescan::Changed, &validator, &Held::default());
        let settled: Vec<(String, Arc<Manifest>)> = first
            .changes
            .iter()
            .map(|c| match &c.event {
                ManifestEvent::Valid(desired) => (c.file.clone(), desired.manifest.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(settled.len(), 2);
        let scan_with = |previous: &Snapshot, gone: BTreeMap<String, std::time::Instant>| {
            let held = Held { settled: settled.clone(), gone, ..Held::default() };
            run_job(d.path(), previous, Rescan::Changed, &validator, &held)
        };
        let events = |o: &Outcome| -> Vec<(String, bool)> {
            o.changes.iter().map(|c| (c.file.clone(), matches!(c.event, ManifestEvent::Valid(_)))).collect()
        };
        // Not gone: refused at once.
        std::fs::write(d.path().join("api.toml"), manifest(8080)).unwrap();
        let refused = scan_with(&first.snapshot, BTreeMap::new());
        assert_eq!(events(&refused), [("api.toml".to_owned(), false)]);
        std::fs::remove_file(d.path().join("api.toml")).unwrap();

        // Renamed, and beside it a file that wants what db.toml (not gone) holds.
        std::fs::rename(d.path().join("web.toml"), d.path().join("web2.toml")).unwrap();
        std::fs::write(d.path().join("api.toml"), manifest(9090)).unwrap();
        let second = scan_with(&first.snapshot, BTreeMap::new());
        assert_eq!(
            events(&second),
            [("api.toml".to_owned(), false)],
            "web2.toml waits for web.toml, api.toml does not"
        );
        std::fs::remove_file(d.path().join("api.toml")).unwrap();
        let second = scan_with(&first.snapshot, BTreeMap::new());
        assert!(second.changes.is_empty(), "web2.toml waits for web.toml: {:?}", second.changes);
        assert!(second.snapshot.contains_key("web.toml") && !second.snapshot.contains_key("web2.toml"));
        assert!(second.gone_until().is_some(), "looked at again");
        let long_ago = std::time::Instant::now() - REMOVAL_SETTLE;
        let third = scan_with(&second.snapshot, BTreeMap::from([("web.toml".to_owned(), long_ago)]));
        assert_eq!(events(&third), [("web.toml".to_owned(), false), ("web2.toml".to_owned(), true)]);
        assert!(matches!(third.changes[0].event, ManifestEvent::Removed));
    }

    /// The first scan after a daemon's start: an adopted sandbox whose
    /// file is now another version, or gone, is stopped as the version it
    /// runs says (its record's manifest: `adopted_runs`), not with the
    /// defaults; a file of it being written is taken as the version that
    /// runs, and one of a workload known only from kept state is not
    /// taken as gone (which would forget a hold, or let a one-shot run
    /// again).
    #[test]
    fn the_first_scan_knows_what_adopted_sandboxes_run_and_what_is_being_written() {
        let (d, root) = (dir(), tempfile::tempdir().unwrap());
        let manifest =
            |extra: &str| format!("command = [\"/bin/sleep\"]\nrootfs = {{ path = {:?} }}\n{extra}\n", root.path());
        let running = manifest("[stop]\nsignal = \"SIGINT\"\ntimeout = \"120s\"");
        let same = manifest("env = { SAME = \"1\" }");
        std::fs::write(d.path().join("web.toml"), manifest("")).unwrap();
        std::fs::write(d.path().join("same.toml"), &same).unwrap();
        let validator = Validator::new(Vec::new());
        let recorded: BTreeMap<String, Arc<str>> =
            [("web.toml", &running), ("gone.toml", &running), ("same.toml", &same)]
                .into_iter()
                .map(|(f, s)| (f.to_owned(), Arc::from(s.as_str())))
                .collect();
        let first = |writes: Option<Arc<Writes>>| {
            let held = Held {
                running: vec!["web.toml".into(), "gone.toml".into(), "same.toml".into()],
                recorded: recorded.clone(),
                restored: vec!["web.toml".into(), "gone.toml".into(), "same.toml".into(), "held.toml".into()],
                writes,
                ..Held::default()
            };
            run_job(d.path(), &Snapshot::new(), Rescan::Everything, &validator, &held)
        };
        let event = |o: &Outcome, file: &str| o.changes.iter().find(|c| c.file == file).map(|c| c.event.clone());

        let outcome = first(None);
        let runs: Vec<_> =
            outcome.adopted_runs.iter().map(|(n, d)| (n.to_string(), d.version, d.manifest.stop.signal)).collect();
        let int = crate::model::Signal::Int;
        assert_eq!(
            runs,
            [("gone".to_owned(), version_of(&running), int), ("web".to_owned(), version_of(&running), int)]
        );
        assert!(
            matches!(event(&outcome, "web.toml"), Some(ManifestEvent::Valid(d)) if d.version == version_of(&manifest("")))
        );
        assert!(event(&outcome, "gone.toml").is_none() && !outcome.snapshot.contains_key("gone.toml"));

        // One today's policies refuse (privileged, under baseline): still
        // stopped as it says.
        let policies =
            crate::validate::load_policies(&["baseline".to_owned()], None, Path::new("/var/lib/paddock/volumes"))
                .expect("built-in policies load");
        let strict = Validator::new(policies);
        let privileged = manifest("[security]\nprivileged = true\n[stop]\nsignal = \"SIGINT\"");
        let held = Held {
            running: vec!["gone.toml".into()],
            recorded: [("gone.toml".to_owned(), Arc::from(privileged.as_str()))].into_iter().collect(),
            ..Held::default()
        };
        let outcome = run_job(d.path(), &Snapshot::new(), Rescan::Everything, &strict, &held);
        let runs: Vec<_> = outcome.adopted_runs.iter().map(|(n, d)| (n.to_string(), d.manifest.stop.signal)).collect();
        assert_eq!(runs, [("gone".to_owned(), int)]);

        // Being written while the scan reads: web as the version that runs
        // (no restart), held.toml (a held workload's) as not yet readable.
        std::fs::write(d.path().join("held.toml"), "command = [").unwrap();
        let writes = Arc::new(Writes::default());
        writes.being_written("web.toml");
        writes.being_written("held.toml");
        let outcome = first(Some(writes));
        assert!(
            matches!(event(&outcome, "web.toml"), Some(ManifestEvent::Valid(d)) if d.version == version_of(&running)),
            "{:?}",
            event(&outcome, "web.toml")
        );
        assert!(!outcome.adopted_runs.iter().any(|(n, _)| n.as_str() == "web"));
        assert!(
            matches!(event(&outcome, "held.toml"), Some(ManifestEvent::Invalid(p)) if p.contains("being written")),
            "{:?}",
            event(&outcome, "held.toml")
        );
    }

    /// Two files that publish one port, both read anew (a daemon's
    /// start): one keeps it. After a crash, the one whose sandbox runs it
    /// as written, not the one edited meanwhile; with nothing running (a
    /// clean restart, a reboot), the older file; both were refused, and
    /// the untouched workload went down with the edited (helper-104).
    #[test]
    fn of_two_files_read_anew_that_publish_one_port_one_keeps_it() {
        let (d, root) = (dir(), tempfile::tempdir().unwrap());
        let manifest = |port: &str| {
            format!("command = [\"/bin/sleep\"]\nrootfs = {{ path = {:?} }}\nports = [\"{port}\"]\n", root.path())
        };
        let write = |file: &str, text: &str, age: u64| {
            let path = d.path().join(file);
            std::fs::write(&path, text).unwrap();
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
        };
        // web runs 18081 as written; edit ran 18083, and its file (the newer) now says 18081.
        write("web.toml", &manifest("18081:80"), 60);
        write("edit.toml", &manifest("18081:80"), 10);
        let validator = Validator::new(Vec::new());
        let refused = |held: &Held| {
            let outcome = run_job(d.path(), &Snapshot::new(), Rescan::Everything, &validator, held);
            let mut refused: Vec<String> = outcome
                .changes
                .iter()
                .filter(|c| matches!(&c.event, ManifestEvent::Invalid(p) if p.contains("already published")))
                .map(|c| c.file.clone())
                .collect();
            refused.sort();
            refused
        };
        let recorded = [("web.toml", manifest("18081:80")), ("edit.toml", manifest("18083:80"))];
        let adopted = Held {
            running: vec!["web.toml".into(), "edit.toml".into()],
            recorded: recorded.iter().map(|(f, s)| (f.to_string(), Arc::from(s.as_str()))).collect(),
            ..Held::default()
        };
        assert_eq!(refused(&adopted), ["edit.toml"], "after a crash: the edit");
        assert_eq!(refused(&Held::default()), ["edit.toml"], "nothing runs: the newer file");
        write("web.toml", &manifest("18081:80"), 5);
        assert_eq!(refused(&Held::default()), ["web.toml"], "now the newer");
        // web's file reworded while no daemon ran (a comment, the same
        // manifest once read; now newer than edit's): web runs what its
        // file says all the same, and keeps its port.
        write("web.toml", &format!("# reworded\n{}", manifest("18081:80")), 5);
        assert_eq!(refused(&adopted), ["edit.toml"], "after a crash, web's file reworded: the edit");
    }

    /// A file refused for a port another file published is validated
    /// again once that file is removed, not left refused (its error naming
    /// a file that is gone) until the next full rescan (helper-132).
    #[test]
    fn a_file_refused_for_a_port_is_validated_again_when_its_holder_goes() {
        let (d, root) = (dir(), tempfile::tempdir().unwrap());
        let manifest =
            |extra: &str| format!("command = [\"/bin/sleep\"]\nrootfs = {{ path = {:?} }}\n{extra}\n", root.path());
        let validator = Validator::new(Vec::new());
        let event = |o: &Outcome, file: &str| o.changes.iter().find(|c| c.file == file).map(|c| c.event.clone());
        std::fs::write(d.path().join("web.toml"), manifest("ports = [\"8080:80\"]")).unwrap();
        let first = run_job(d.path(), &Snapshot::new(), Rescan::Everything, &validator, &Held::default());
        let Some(ManifestEvent::Valid(web)) = event(&first, "web.toml") else { panic!("{:?}", first.changes) };
        let settled = vec![("web.toml".to_owned(), web.manifest.clone())];

        std::fs::write(d.path().join("api.toml"), manifest("ports = [\"8080:81\"]")).unwrap();
        let held = Held { settled: settled.clone(), running: vec!["web.toml".into()], ..Held::default() };
        let second = run_job(d.path(), &first.snapshot, Rescan::Changed, &validator, &held);
        let Some(ManifestEvent::Invalid(problems)) = event(&second, "api.toml") else { panic!("{:?}", second.changes) };
        assert!(problems.contains("is already published by web.toml ("), "{problems}");

        // web.toml removed, and gone long enough to be taken as removed.
        std::fs::remove_file(d.path().join("web.toml")).unwrap();
        let long_ago = std::time::Instant::now().checked_sub(REMOVAL_SETTLE * 2).expect("a machine up a while");
        let held = Held {
            settled,
            running: vec!["web.toml".into()],
            invalid: [("api.toml".to_owned(), problems)].into(),
            gone: [("web.toml".to_owned(), long_ago)].into(),
            ..Held::default()
        };
        let third = run_job(d.path(), &second.snapshot, Rescan::Changed, &validator, &held);
        assert!(matches!(event(&third, "web.toml"), Some(ManifestEvent::Removed)), "{:?}", third.changes);
        assert!(matches!(event(&third, "api.toml"), Some(ManifestEvent::Valid(_))), "{:?}", third.changes);
    }

    #[test]
    fn the_first_scan_keeps_an_adopted_sandbox_with_an_invalid_file_on_its_recorded_manifest() {
        let (d, root) = (dir(), tempfile::tempdir().unwrap());
        let manifest =
            |extra: &str| format!("command = [\"/bin/sleep\"]\nrootfs = {{ path = {:?} }}\n{extra}\n", root.path());
        let running = manifest("ports = [\"8080:80\"]");
        std::fs::write(d.path().join("web.toml"), "command = \"not a list\"\n").unwrap();
        std::fs::write(d.path().join("api.toml"), manifest("ports = [\"8080:81\"]")).unwrap();
        std::fs::write(d.path().join("ok.toml"), manifest("")).unwrap();
        let validator = Validator::new(Vec::new());
        let first = |recorded: &[(&str, &str)]| {
            let held = Held {
                running: vec!["web.toml".into(), "ok.toml".into(), "gone.toml".into()],
                recorded: recorded.iter().map(|(f, s)| (f.to_string(), Arc::from(*s))).collect(),
                ..Held::default()
            };
            run_job(d.path(), &Snapshot::new(), Rescan::Everything, &validator, &held)
        };
        let event = |o: &Outcome, file: &str| o.changes.iter().find(|c| c.file == file).map(|c| c.event.clone());

        // Kept, with its version, and its port held against a newcomer.
        let outcome = first(&[("web.toml", &running), ("ok.toml", "command = [\"/x\"]"), ("gone.toml", &running)]);
        let kept: Vec<_> = outcome.kept.iter().map(|(n, d)| (n.to_string(), d.version, d.source.to_string())).collect();
        assert_eq!(kept, [("web".to_owned(), version_of(&running), running.clone())], "only the invalid file's");
        assert_eq!(outcome.kept[0].1.manifest.ports.len(), 1);
        assert!(
            matches!(event(&outcome, "web.toml"), Some(ManifestEvent::Invalid(p)) if p.contains("must be an array"))
        );
        assert!(
            matches!(event(&outcome, "api.toml"), Some(ManifestEvent::Invalid(p)) if p.contains("host port 8080/tcp is already published by web.toml")),
            "{:?}",
            event(&outcome, "api.toml")
        );
        assert!(matches!(event(&outcome, "ok.toml"), Some(ManifestEvent::Valid(_))));

        // A recorded manifest that is not valid now (here: no command) is not kept.
        let outcome = first(&[("web.toml", "rootfs = { path = \"/\" }\n")]);
        assert!(outcome.kept.is_empty());
        assert!(matches!(event(&outcome, "api.toml"), Some(ManifestEvent::Valid(_))), "nothing holds the port");

        // Without records (a daemon's later scans), nothing is kept.
        assert!(first(&[]).kept.is_empty());

        // A running one whose edited file wants the port the kept one holds
        // is refused for it, and kept on its own recorded manifest too.
        let before = manifest("ports = [\"9090:80\"]");
        std::fs::write(d.path().join("ok.toml"), manifest("ports = [\"8080:82\"]")).unwrap();
        let outcome = first(&[("web.toml", &running), ("ok.toml", &before)]);
        let kept: Vec<_> = outcome.kept.iter().map(|(n, d)| (n.to_string(), d.version)).collect();
        assert_eq!(kept, [("web".to_owned(), version_of(&running)), ("ok".to_owned(), version_of(&before))]);
        assert!(
            matches!(event(&outcome, "ok.toml"), Some(ManifestEvent::Invalid(p)) if p.contains("already published by web.toml"))
        );

        // Whose old version, running on, holds port 9090 in turn: a
        // newcomer that wants it, accepted while ok's edit looked valid,
        // is refused once ok's edit is.
        std::fs::write(d.path().join("new.toml"), manifest("ports = [\"9090:80\"]")).unwrap();
        let outcome = first(&[("web.toml", &running), ("ok.toml", &before)]);
        assert_eq!(outcome.kept.len(), 2);
        assert!(
            matches!(event(&outcome, "new.toml"), Some(ManifestEvent::Invalid(p)) if p.contains("host port 9090/tcp is already published by ok.toml")),
            "{:?}",
            event(&outcome, "new.toml")
        );
        std::fs::remove_file(d.path().join("new.toml")).unwrap();

        // A directory refused (others may write it; made so after the
        // daemon's start checked it): nothing is applied, and what was
        // adopted runs on with what it was started from.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let outcome = first(&[("web.toml", &running), ("ok.toml", &before)]);
        assert!(outcome.refused.is_some() && outcome.changes.is_empty());
        let kept: Vec<_> = outcome.kept.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(kept, ["ok", "web"]);
    }

    /// A running daemon's own gap, closed by the same loop: an edit
    /// refused leaves the old version running, holding its port; a
    /// newcomer that wants that port is refused, though the refused edit
    /// gave the port up.
    #[test]
    fn an_edit_refused_leaves_its_old_version_holding_its_ports() {
        let root = tempfile::tempdir().unwrap();
        let manifest = |ports: &str| {
            format!("command = [\"/bin/sleep\"]\nrootfs = {{ path = {:?} }}\nports = {ports}\n", root.path())
        };
        let validator = Validator::new(Vec::new());
        // A rescan of `edits` (file, ports) while `running` (file, ports)
        // run with their versions: what it makes of each edit.
        let rescan = |edits: &[(&str, &str)], running: &[(&str, &str)]| {
            let d = dir();
            for (file, ports) in edits {
                std::fs::write(d.path().join(file), manifest(ports)).unwrap();
            }
            let parse = |ports| {
                Arc::new(validator.validate("x.toml", &manifest(ports), HostChecks::Skip).spec.unwrap().manifest)
            };
            let held = Held {
                settled: running.iter().map(|(file, ports)| (file.to_string(), parse(ports))).collect(),
                running: running.iter().map(|(file, _)| file.to_string()).collect(),
                ..Held::default()
            };
            let outcome = run_job(d.path(), &Snapshot::new(), Rescan::Changed, &validator, &held);
            outcome.changes.into_iter().map(|c| (c.file, c.event)).collect::<BTreeMap<_, _>>()
        };
        let refused = |event: &ManifestEvent, why: &str| matches!(event, ManifestEvent::Invalid(p) if p.contains(why));

        // a ran on 8080; its edit wants 7000, which k holds; n wants 8080.
        let events = rescan(
            &[("a.toml", r#"["7000:80"]"#), ("n.toml", r#"["8080:80"]"#)],
            &[("a.toml", r#"["8080:80"]"#), ("k.toml", r#"["7000:80"]"#)],
        );
        assert!(refused(&events["a.toml"], "already published by k.toml"), "{events:?}");
        assert!(refused(&events["n.toml"], "host port 8080/tcp is already published by a.toml"), "{events:?}");

        // A refusal caused only by another change's new version does not
        // outlast that change's own refusal: c's edit is refused for k's
        // 7000, so c's old version keeps 9000, which refuses r's edit;
        // n, refused at first for r's new 6000, is then valid.
        let events = rescan(
            &[("c.toml", r#"["7000:80"]"#), ("r.toml", r#"["6000:80", "9000:81"]"#), ("n.toml", r#"["6000:80"]"#)],
            &[("k.toml", r#"["7000:80"]"#), ("c.toml", r#"["9000:80"]"#), ("r.toml", r#"["8000:80"]"#)],
        );
        assert!(refused(&events["c.toml"], "7000/tcp is already published by k.toml"), "{events:?}");
        assert!(refused(&events["r.toml"], "9000/tcp is already published by c.toml"), "{events:?}");
        assert!(matches!(events["n.toml"], ManifestEvent::Valid(_)), "{events:?}");

        // Refusals by what holds come first: a's and c's edits both want
        // port 80, and c's also wants d's 8443. c is refused for d's port
        // alone, its old version runs on, and a's edit is then valid.
        let events = rescan(
            &[("a.toml", r#"["80:80"]"#), ("c.toml", r#"["80:80", "8443:443"]"#)],
            &[("a.toml", r#"["8081:80"]"#), ("c.toml", r#"["8082:80"]"#), ("d.toml", r#"["8443:443"]"#)],
        );
        assert!(refused(&events["c.toml"], "8443/tcp is already published by d.toml"), "{events:?}");
        assert!(matches!(events["a.toml"], ManifestEvent::Valid(_)), "{events:?}");
    }
}
