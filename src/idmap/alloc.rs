//! Per-workload slices of the remap ranges: a workload keeps its slice for
//! as long as its manifest exists, across restarts of the workload and of
//! the daemon, because the allocation is persisted in the state directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::subid::IdRange;
use crate::fsutil::write_atomic;

/// How workloads share the ranges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    // Plain comments, not doc comments: documented variants would make the
    // schema a `oneOf`, whose errors read worse than an `enum`'s.
    // Each workload its own slice: no two workloads share a host id.
    #[default]
    PerWorkload,
    // Every workload the first range, as Docker's userns-remap does.
    Shared,
}

/// The host ids a sandbox's ids 0..size map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub uid: IdRange,
    pub gid: IdRange,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error(
        "no id slice is free: the ranges hold {total} slices of {size} ids and all are in use; free some, or add ranges to /etc/subuid and /etc/subgid"
    )]
    Exhausted { total: usize, size: u32 },
    #[error(
        "the id slice of {name} is the daemon's workload's ({slice} ids from {start}), which a `paddock run` may share but not change; this run's settings would give it another (slice size {size}, its isolation, or other ranges): run it with the daemon's settings, or name its manifest otherwise"
    )]
    DaemonsSlice { name: String, start: u32, slice: u32, size: u32 },
    #[error("cannot read the id allocations {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot copy the unreadable id table {path} aside to {aside}: {source}")]
    MoveAside { path: PathBuf, aside: PathBuf, source: std::io::Error },
    #[error("cannot write the id allocations {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot hold this run's id slice by its lock file {path}: {source} (it must be a regular file in a directory of root's; remove what is there)"
    )]
    Hold { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot write which id slices this run has into its lock file {path}: {source} (free space on that filesystem, or mend what is there)"
    )]
    Record { path: PathBuf, source: std::io::Error },
}

/// How many slices of `size` ids a range is cut into: one of its own size
/// when it is smaller.
fn slices_in(r: &IdRange, size: u32) -> usize {
    if r.count < size { 1 } else { (r.count / size) as usize }
}

/// Cuts ranges into slices of `size` ids (`slices_in`), as they are needed:
/// a small `slice_size` over large ranges is billions of slices.
fn cut(ranges: &[IdRange], size: u32) -> impl Iterator<Item = IdRange> + '_ {
    ranges.iter().flat_map(move |r| {
        let size = if r.count < size { r.count } else { size };
        (0..slices_in(r, size) as u32).map(move |i| IdRange { start: r.start + i * size, count: size })
    })
}

/// Which slice of `ranges` (cut as `cut` cuts them) `slice` is, if it is one.
fn index_of(ranges: &[IdRange], size: u32, slice: &IdRange) -> Option<usize> {
    let mut before = 0;
    for r in ranges {
        let step = if r.count < size { r.count } else { size };
        let offset = slice.start.checked_sub(r.start);
        if let Some(offset) = offset.filter(|o| slice.count == step && step > 0 && o % step == 0)
            && (offset / step) < slices_in(r, size) as u32
        {
            return Some(before + (offset / step) as usize);
        }
        before += slices_in(r, size);
    }
    None
}

/// How many slices the ranges hold (uids and gids are cut alike).
pub fn slice_count(uids: &[IdRange], gids: &[IdRange], size: u32) -> usize {
    let count = |ranges: &[IdRange]| ranges.iter().map(|r| slices_in(r, size)).sum::<usize>();
    count(uids).min(count(gids))
}

/// Ranges in use, for overlap queries in O(log n): a thousand workloads
/// starting at once would otherwise check each candidate slice against
/// every allocation (O(n^2) per start).
struct Taken {
    /// Sorted by start, with the largest end among each range and those before it.
    ranges: Vec<(u64, u64)>,
}

impl Taken {
    fn new(ranges: impl Iterator<Item = IdRange>) -> Self {
        let mut ranges: Vec<(u64, u64)> = ranges.map(|r| (u64::from(r.start), r.end())).collect();
        ranges.sort_unstable();
        let mut furthest = 0;
        for range in &mut ranges {
            furthest = furthest.max(range.1);
            range.1 = furthest;
        }
        Self { ranges }
    }

    /// Whether some range starts before `r` ends and ends after it starts.
    fn overlaps(&self, r: &IdRange) -> bool {
        let before_end = self.ranges.partition_point(|(start, _)| *start < r.end());
        before_end > 0 && self.ranges[before_end - 1].1 > u64::from(r.start)
    }
}

/// The persisted table: workload name to slice.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    slices: BTreeMap<String, Slice>,
    /// Those given the first slice by `shared` isolation: they share it by
    /// their own settings, so it is not theirs alone, and a workload's own
    /// slice is not taken from it for sharing with them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    shared: BTreeSet<String>,
    /// The names of the daemon's workloads: a `paddock run` never changes
    /// their slices, and an entry that overlaps one and is not the
    /// daemon's gives way to it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    daemons: BTreeSet<String>,
    /// The names whose slices `paddock run`s were given (runs of one
    /// manifest side by side share it). Once no run of a name holds it (a
    /// `RunHold`), its slice is kept for the next run of that manifest,
    /// but given to another when none is free. An entry that is neither
    /// the daemon's nor a run's (an older paddock's) is kept for good.
    /// Which runs live is not written here: the table is written only when
    /// a slice changes hands, not at every run. (A key of its own: a
    /// paddock that knows only `runs` reads these as its own older
    /// entries, kept for good.)
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    run_names: BTreeSet<String>,
    /// Runs as a paddock of 2026-12-06 marked them, by process: kept as
    /// read (that paddock reads them), and a name's slice is not given
    /// away while one of these runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    runs: BTreeMap<String, Vec<RunProcess>>,
    /// Slices a name had while `paddock run`s of it went on, and has no
    /// more (the daemon's settings, or a run's, gave the name another):
    /// those runs still have their ids, so the slices stay taken until no
    /// run holds the name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    held: BTreeMap<String, Vec<Slice>>,
}

/// The runs of `name` an older paddock marked by process (`Allocations::runs`).
fn older_of<'a>(runs: &'a BTreeMap<String, Vec<RunProcess>>, name: &str) -> &'a [RunProcess] {
    runs.get(name).map_or(&[][..], Vec::as_slice)
}

/// A `paddock run`'s process, by pid and start time (a pid alone may be
/// reused), as an older paddock marked its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProcess {
    pub pid: u32,
    pub started: u64,
}

/// A `paddock run`'s hold on its manifest name's slice: a shared lock on
/// `STATE/runs/NAME.lock`, taken before the slice and held while the run
/// lives; the kernel drops it when the process ends, however it ends, and
/// a pid reused meanwhile holds nothing. The lock files are kept; each
/// names the slices its runs have (`record`), for a table rebuilt while
/// they run.
pub struct RunHold {
    lock: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
}

/// The most of a lock file `held_slices` reads (a slice is about 70 bytes).
const RECORD_MAX: u64 = 64 * 1024;

impl RunHold {
    const DIR: &str = "runs";

    /// `None` for what is no workload's name (one read from a damaged
    /// table, `../x` say): it names no file.
    fn path(state_dir: &Path, name: &str) -> Option<PathBuf> {
        crate::model::WorkloadName::try_from(name.to_owned()).ok()?;
        Some(state_dir.join(Self::DIR).join(format!("{name}.lock")))
    }

    /// Opens the lock file at `path` as it is: never through a link, never
    /// a FIFO's open that would wait for a writer, and only a regular file.
    fn open(options: &mut std::fs::OpenOptions, path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let file = options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
        let kind = file.metadata()?.file_type();
        if !kind.is_file() {
            let what = if kind.is_fifo() { "a FIFO" } else { "not a regular file" };
            return Err(std::io::Error::other(format!("it is {what}")));
        }
        Ok(file)
    }

    /// Holds `name` for this process (waiting while another tells whether
    /// its runs have ended, a moment at most).
    pub fn take(state_dir: &Path, name: &str) -> Result<Self, AllocError> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = Self::path(state_dir, name) else {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "it is no workload's name");
            return Err(AllocError::Hold { path: state_dir.join(Self::DIR).join(name), source });
        };
        let io = |source| AllocError::Hold { path: path.clone(), source };
        // (Its parents too: the state directory, if new.)
        crate::fsutil::create_private_dir(&state_dir.join(Self::DIR)).map_err(io)?;
        let file = Self::open(
            std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).mode(0o600),
            &path,
        )
        .map_err(io)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared).map_err(|(_, e)| io(e.into()))?;
        Ok(Self { lock, path })
    }

    /// Writes the slices the manifest's runs have (this run's first: the
    /// table's `slices_of`) into the lock file, for a daemon that finds the
    /// table unreadable and rebuilds it while they go on (`held_slices`).
    /// Called under the table's lock, as the table is changed.
    /// Written only when it says something else: a run of a manifest
    /// whose slice has not changed writes nothing (as the table).
    pub fn record(&self, slices: &[Slice]) -> Result<(), AllocError> {
        use std::os::unix::fs::FileExt;
        let text = serde_json::to_vec(slices).map_err(std::io::Error::other);
        text.and_then(|text| {
            let mut was = vec![0; text.len()];
            let same = self.lock.metadata()?.len() == text.len() as u64
                && self.lock.read_exact_at(&mut was, 0).is_ok()
                && was == text;
            if !same {
                self.lock.write_all_at(&text, 0)?;
                self.lock.set_len(text.len() as u64)?;
            }
            Ok(())
        })
        .map_err(|source| AllocError::Record { path: self.path.clone(), source })
    }

    /// The slices runs that still run have, by manifest name (the name's
    /// own first), as their lock files say; and the names of those whose
    /// file holds none (a run of an older paddock, which did not write it).
    fn held_slices(state_dir: &Path) -> (Vec<(String, Vec<Slice>)>, Vec<String>) {
        use std::io::Read;
        let (mut slices, mut unknown) = (Vec::new(), Vec::new());
        let entries = std::fs::read_dir(state_dir.join(Self::DIR)).into_iter().flatten().flatten();
        for name in entries.filter_map(|e| e.file_name().to_str()?.strip_suffix(".lock").map(str::to_owned)) {
            let Some(path) = Self::path(state_dir, &name) else { continue };
            if Self::all_ended(state_dir, &name, &[]) {
                continue;
            }
            let mut text = Vec::new();
            let read = Self::open(std::fs::OpenOptions::new().read(true), &path)
                .and_then(|f| f.take(RECORD_MAX).read_to_end(&mut text));
            match read.ok().and_then(|_| serde_json::from_slice::<Vec<Slice>>(&text).ok()) {
                Some(held) if !held.is_empty() => slices.push((name, held)),
                _ => unknown.push(name),
            }
        }
        (slices, unknown)
    }

    /// `all_ended` for the runs under `state_dir`, as the allocations ask it (`Ended`).
    pub fn ended_under(state_dir: &Path) -> impl Fn(&str, &[RunProcess]) -> bool + '_ {
        move |name, older| Self::all_ended(state_dir, name, older)
    }

    /// Whether every run of `name` has ended: none holds it, and none of
    /// `older` (runs an older paddock marked by process) runs. What
    /// cannot be told counts as running; a name without a lock file has
    /// no run that holds it.
    pub fn all_ended(state_dir: &Path, name: &str, older: &[RunProcess]) -> bool {
        let Some(path) = Self::path(state_dir, name) else { return false };
        let unheld = match Self::open(std::fs::OpenOptions::new().read(true), &path) {
            Ok(file) => nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        unheld && older.iter().all(|r| crate::sandbox::process::has_ended(r.pid, r.started))
    }
}

/// How slices are cut from the remap ranges and shared: the ranges, the
/// slice size, and the isolation.
#[derive(Debug, Clone, Copy)]
pub struct Cutting<'a> {
    pub uids: &'a [IdRange],
    pub gids: &'a [IdRange],
    pub size: u32,
    pub isolation: Isolation,
}

/// Whether every `paddock run` of a name has ended, given the runs an
/// older paddock marked by process (what cannot be told counts as
/// running): the caller's to tell, by `RunHold::all_ended`.
pub type Ended<'a> = &'a dyn Fn(&str, &[RunProcess]) -> bool;

impl Allocations {
    pub const FILE: &str = "idmap.json";

    /// Loads `state_dir/idmap.json`; a missing file is an empty table. A
    /// corrupt one is an error: guessing would risk giving two workloads
    /// one slice.
    pub fn load(state_dir: &Path) -> Result<Self, AllocError> {
        let path = state_dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AllocError::Read {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(AllocError::Read { path, source }),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), AllocError> {
        let path = state_dir.join(Self::FILE);
        let write = |source| AllocError::Write { path: path.clone(), source };
        crate::fsutil::create_private_dir(state_dir).map_err(write)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| write(std::io::Error::other(e)))?;
        write_atomic(&path, &json, 0o600).map_err(write)
    }

    /// Loads the table under an exclusive lock (`idmap.lock`), lets `f`
    /// change it, and saves it before the lock is released, so two paddock
    /// processes never hand out one slice twice.
    pub fn update<T>(state_dir: &Path, f: impl FnOnce(&mut Self) -> Result<T, AllocError>) -> Result<T, AllocError> {
        let _lock = Self::lock(state_dir)?;
        let mut table = Self::load(state_dir)?;
        let before = table.clone();
        let out = f(&mut table)?;
        // Most starts reuse a slice: no write, no fsync.
        if table != before {
            table.save(state_dir)?;
        }
        Ok(out)
    }

    /// The lock every change of the table is made under (`idmap.lock`).
    fn lock(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, AllocError> {
        let lock_path = state_dir.join("idmap.lock");
        let io = |source| AllocError::Write { path: lock_path.clone(), source };
        crate::fsutil::create_private_dir(state_dir).map_err(io)?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io(e.into()))
    }

    /// When the table is not one (read, but not JSON of a table): copies it
    /// aside (to `aside`) and writes `known` (the daemon's workloads') in
    /// its place, with the slices of the `paddock run`s that still run
    /// (their lock files say which: `RunHold::record`), all under the lock,
    /// so no `paddock run` takes a slice from an empty table in between.
    /// The bad table stays in place until the rebuilt one replaces it: a
    /// failure on the way (a full disk) leaves a table every start refuses,
    /// never no table, which would be an empty one. A table that could not
    /// be read at all (out of descriptors, an I/O error) says nothing of
    /// its content and is left alone: that error is returned. A table that
    /// is gone while `known` is not empty (deleted, a state directory
    /// restored without it) is no fresh one either: it is rebuilt the same
    /// way (nothing to copy aside), or the slices of running sandboxes
    /// would be given again. Returns why the table was rebuilt, or `None`
    /// when it can be read, or is gone with nothing known (nothing done).
    pub fn rebuild_if_unreadable(
        state_dir: &Path,
        aside: &Path,
        known: impl IntoIterator<Item = (String, Slice)>,
    ) -> Result<Option<AllocError>, AllocError> {
        let _lock = Self::lock(state_dir)?;
        let path = state_dir.join(Self::FILE);
        let mut slices: BTreeMap<String, Slice> = known.into_iter().collect();
        let unreadable = match Self::load(state_dir) {
            Ok(_) if slices.is_empty() || path.exists() => return Ok(None),
            Ok(_) => AllocError::Read { path: path.clone(), source: std::io::ErrorKind::NotFound.into() },
            Err(e) => e,
        };
        match &unreadable {
            AllocError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {}
            AllocError::Read { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
                let copy_aside = std::fs::read(&path).and_then(|bad| write_atomic(aside, &bad, 0o600));
                copy_aside.map_err(|source| AllocError::MoveAside { path, aside: aside.to_owned(), source })?;
            }
            _ => return Err(unreadable),
        }
        let daemons: BTreeSet<String> = slices.keys().cloned().collect();
        let (runs, unknown) = RunHold::held_slices(state_dir);
        let (mut run_names, mut held) = (BTreeSet::new(), BTreeMap::<String, Vec<Slice>>::new());
        for (name, had) in runs {
            for slice in had {
                // What a daemon's workload of another name has is not this
                // run's (its file was written before that slice changed
                // hands, and the run has not been given one yet).
                let anothers = |(n, s): (&String, &Slice)| {
                    n != &name && daemons.contains(n) && (s.uid.overlaps(&slice.uid) || s.gid.overlaps(&slice.gid))
                };
                if slices.iter().any(anothers) {
                    continue;
                }
                match slices.get(&name) {
                    None => {
                        slices.insert(name.clone(), slice);
                        run_names.insert(name.clone());
                    }
                    Some(own) if *own != slice => held.entry(name.clone()).or_default().push(slice),
                    Some(_) => {}
                }
            }
        }
        if !unknown.is_empty() {
            tracing::warn!(runs = ?unknown, "`paddock run`s of these manifests still run, but their lock files do not say which id slices they have (unreadable, not written yet, or an older paddock's): a new workload may be given one of theirs until they end");
        }
        let table = Self { slices, daemons, run_names, held, ..Self::default() };
        table.save(state_dir)?;
        Ok(Some(unreadable))
    }

    pub fn get(&self, name: &str) -> Option<&Slice> {
        self.slices.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Slice)> {
        self.slices.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// The daemon's workload's slice: the one it had if that is still its
    /// own (a slice of the ranges as they are now cut, uids and gids each,
    /// that no other of the daemon's workloads overlaps), else the first
    /// free one, uids and gids allocated together (slice i of the uid
    /// ranges with slice i of the gid ranges). With `shared` isolation, the
    /// first slice, whoever has it. A slice a `paddock run` of this name
    /// was given is the daemon's from now on.
    pub fn allocate(&mut self, name: &str, cutting: Cutting<'_>, ended: Ended<'_>) -> Result<Slice, AllocError> {
        let slice = self.slice_for(name, cutting, true, ended)?;
        self.run_names.remove(name);
        self.runs.remove(name);
        self.daemons.insert(name.to_owned());
        Ok(slice)
    }

    /// A `paddock run`'s slice (the run holds its name: `RunHold`), as
    /// `allocate` gives one; but a daemon's workload's slice is shared as
    /// it is, never changed: a run whose settings would give that name
    /// another is refused, changing nothing.
    pub fn allocate_for_run(
        &mut self,
        name: &str,
        cutting: Cutting<'_>,
        ended: Ended<'_>,
    ) -> Result<Slice, AllocError> {
        if let Some(&daemons) = self.slices.get(name).filter(|_| self.daemons.contains(name)) {
            let before = self.clone();
            let slice = self.slice_for(name, cutting, false, ended);
            *self = before;
            return match slice? {
                slice if slice == daemons => Ok(slice),
                _ => Err(AllocError::DaemonsSlice {
                    name: name.to_owned(),
                    start: daemons.uid.start,
                    slice: daemons.uid.count,
                    size: cutting.size,
                }),
            };
        }
        let slice = self.slice_for(name, cutting, false, ended)?;
        self.run_names.insert(name.to_owned());
        // Runs an older paddock marked that have ended go (and the name
        // with them once none is left: that paddock then keeps the slice
        // for good, never giving away one this run holds).
        if let Some(older) = self.runs.get_mut(name) {
            older.retain(|r| !crate::sandbox::process::has_ended(r.pid, r.started));
            if older.is_empty() {
                self.runs.remove(name);
            }
        }
        Ok(slice)
    }

    /// Gives `name` a slice: its own kept, else a free one, else one kept
    /// for runs that have all ended. For the daemon (`for_daemon`), only
    /// the daemon's other workloads' slices make it give its own up.
    fn slice_for(
        &mut self,
        name: &str,
        cutting: Cutting<'_>,
        for_daemon: bool,
        ended: Ended<'_>,
    ) -> Result<Slice, AllocError> {
        let runs = &self.runs;
        self.held.retain(|n, _| !ended(n, older_of(runs, n)));
        let Cutting { uids, gids, size, isolation } = cutting;
        if isolation == Isolation::Shared {
            let first = cut(uids, size)
                .zip(cut(gids, size))
                .map(|(uid, gid)| Slice { uid, gid })
                .next()
                .ok_or(AllocError::Exhausted { total: 0, size })?;
            self.give(name, first, ended);
            self.shared.insert(name.to_owned());
            return Ok(first);
        }
        // Kept across changes of the files that leave it inside them (a
        // range added to one file only moves no one), but never shared:
        // not one given by `shared` isolation, nor one another's overlaps
        // (as tables written before shared ones were marked have), unless
        // that other gives way to the daemon's workload.
        let rival =
            |n: &String| n != name && !self.shared.contains(n) && (!for_daemon || self.daemons.contains(n.as_str()));
        let own = |s: &Slice| {
            index_of(uids, size, &s.uid).is_some()
                && index_of(gids, size, &s.gid).is_some()
                && !self.slices.iter().any(|(n, o)| rival(n) && (o.uid.overlaps(&s.uid) || o.gid.overlaps(&s.gid)))
        };
        if !self.shared.contains(name)
            && let Some(existing) = self.slices.get(name).filter(|s| own(s))
        {
            return Ok(*existing);
        }
        loop {
            // Another's slice, or one another's runs still have (a name's
            // own runs are of one manifest: they may share).
            let others = || {
                let held = self.held.iter().filter(|(n, _)| n.as_str() != name).flat_map(|(_, h)| h);
                self.slices.iter().filter(|(n, _)| n.as_str() != name).map(|(_, s)| s).chain(held)
            };
            let (uids_used, gids_used) = (Taken::new(others().map(|s| s.uid)), Taken::new(others().map(|s| s.gid)));
            let free = cut(uids, size)
                .zip(cut(gids, size))
                .map(|(uid, gid)| Slice { uid, gid })
                .find(|c| !uids_used.overlaps(&c.uid) && !gids_used.overlaps(&c.gid));
            if let Some(free) = free {
                self.give(name, free, ended);
                self.shared.remove(name);
                return Ok(free);
            }
            // None is free: the slice kept for a manifest whose `paddock
            // run`s have all ended goes to this one.
            let older = |n: &str| older_of(&self.runs, n);
            let done = self
                .run_names
                .iter()
                .chain(self.runs.keys())
                .find(|n| n.as_str() != name && ended(n, older(n)))
                .cloned();
            let Some(done) = done else {
                return Err(AllocError::Exhausted { total: slice_count(uids, gids, size), size });
            };
            tracing::info!(run = %done, workload = %name, "no id slice is free: the one kept for a `paddock run` that has ended is given to this workload");
            self.free(&done);
        }
    }

    /// Gives `name` `slice`. The one it had stays taken (`held`) while runs
    /// of the name go on with its ids.
    fn give(&mut self, name: &str, slice: Slice, ended: Ended<'_>) {
        if let Some(old) = self.slices.insert(name.to_owned(), slice)
            && old != slice
            && !ended(name, older_of(&self.runs, name))
        {
            let held = self.held.entry(name.to_owned()).or_default();
            if !held.contains(&old) {
                held.push(old);
            }
        }
        // Its own again (settings changed back): not held beside.
        if let Some(held) = self.held.get_mut(name) {
            held.retain(|s| *s != slice);
            if held.is_empty() {
                self.held.remove(name);
            }
        }
    }

    /// The slices the runs of `name` may have: its own, and those it had
    /// while they ran (`held`), for their lock files (`RunHold::record`).
    pub fn slices_of(&self, name: &str) -> Vec<Slice> {
        self.slices.get(name).into_iter().chain(self.held.get(name).into_iter().flatten()).copied().collect()
    }

    /// Marks the names as the daemon's workloads' (those it knows from its
    /// kept state, in a table an older daemon wrote).
    pub fn claim<'n>(&mut self, names: impl IntoIterator<Item = &'n str>) {
        for name in names {
            if self.slices.contains_key(name) {
                self.run_names.remove(name);
                self.runs.remove(name);
                self.daemons.insert(name.to_owned());
            }
        }
    }

    /// The daemon's workload `name` is gone (its manifest was deleted):
    /// its slice is freed, unless a `paddock run` of that name goes on,
    /// which keeps it as a run's, given to another only once no run holds
    /// the name. Freed, it would go to the next new workload while that
    /// run's processes still have its ids.
    pub fn release(&mut self, name: &str, ended: Ended<'_>) -> Option<Slice> {
        let older = older_of(&self.runs, name);
        if self.slices.contains_key(name) && !ended(name, older) {
            if self.daemons.remove(name) {
                self.run_names.insert(name.to_owned());
            }
            return None;
        }
        self.free(name)
    }

    /// Frees a slice, whoever has it, and those its runs had (`held`).
    pub fn free(&mut self, name: &str) -> Option<Slice> {
        self.held.remove(name);
        self.shared.remove(name);
        self.daemons.remove(name);
        self.run_names.remove(name);
        self.runs.remove(name);
        self.slices.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name has a run that goes on.
    fn runs_go_on(_: &str, _: &[RunProcess]) -> bool {
        false
    }

    /// No name has a run that goes on.
    fn none_run(_: &str, _: &[RunProcess]) -> bool {
        true
    }

    #[test]
    fn taken_ranges_answer_as_overlaps_does() {
        let used = [(10, 5), (100, 50), (120, 5), (0, 1), (300, 1)].map(|(start, count)| IdRange { start, count });
        let taken = Taken::new(used.iter().copied());
        for start in 0..400 {
            for count in [1, 2, 7, 30, 100] {
                let r = IdRange { start, count };
                assert_eq!(taken.overlaps(&r), used.iter().any(|u| u.overlaps(&r)), "{r:?}");
            }
        }
        assert!(!Taken::new(std::iter::empty()).overlaps(&IdRange { start: 0, count: 10 }));
    }

    #[test]
    fn slices_are_found_without_cutting_every_range() {
        let ranges = [
            IdRange { start: 100000, count: 70000 },
            IdRange { start: 1_000_000, count: 10 },
            IdRange { start: 2_000_000, count: 1 << 20 },
        ];
        for size in [1, 7, 10, 65536, 100000] {
            for (i, slice) in cut(&ranges, size).take(5000).enumerate() {
                assert_eq!(index_of(&ranges, size, &slice), Some(i), "size {size}: {slice:?}");
            }
        }
        assert_eq!(index_of(&ranges, 7, &IdRange { start: 100001, count: 7 }), None, "not on a slice's start");
        assert_eq!(index_of(&ranges, 7, &IdRange { start: 100000, count: 8 }), None, "not a slice's size");
        assert_eq!(index_of(&ranges, 65536, &IdRange { start: 100000 + 65536, count: 65536 }), None, "past the end");
        // One id a slice over 2^31 ids: allocated, kept and counted at once.
        let big = [IdRange { start: 1 << 20, count: 1 << 31 }];
        let mut table = Allocations::default();
        let a = table
            .allocate("a", Cutting { uids: &big, gids: &big, size: 1, isolation: Isolation::PerWorkload }, &runs_go_on)
            .unwrap();
        let b = table
            .allocate("b", Cutting { uids: &big, gids: &big, size: 1, isolation: Isolation::PerWorkload }, &runs_go_on)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            table
                .allocate(
                    "a",
                    Cutting { uids: &big, gids: &big, size: 1, isolation: Isolation::PerWorkload },
                    &runs_go_on
                )
                .unwrap(),
            a
        );
        assert_eq!(slice_count(&big, &big, 1), 1 << 31);
    }

    const R: IdRange = IdRange { start: 100000, count: 65536 * 3 };

    #[test]
    fn slices_are_disjoint_stable_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Allocations::default();
        let web = a
            .allocate(
                "web",
                Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::PerWorkload },
                &runs_go_on,
            )
            .unwrap();
        let db = a
            .allocate(
                "db",
                Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::PerWorkload },
                &runs_go_on,
            )
            .unwrap();
        assert_eq!(web.uid, IdRange { start: 100000, count: 65536 });
        assert_eq!(db.uid, IdRange { start: 165536, count: 65536 });
        a.save(dir.path()).unwrap();
        let mut b = Allocations::load(dir.path()).unwrap();
        assert_eq!(
            b.allocate(
                "db",
                Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::PerWorkload },
                &runs_go_on
            )
            .unwrap(),
            db
        );
        b.allocate(
            "x",
            Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::PerWorkload },
            &runs_go_on,
        )
        .unwrap();
        let err = b
            .allocate(
                "y",
                Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::PerWorkload },
                &runs_go_on,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no id slice is free: the ranges hold 3 slices of 65536 ids and all are in use; free some, or add ranges to /etc/subuid and /etc/subgid"
        );
        b.free("web");
        assert_eq!(
            b.allocate(
                "y",
                Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::PerWorkload },
                &runs_go_on
            )
            .unwrap(),
            web
        );
    }

    #[test]
    fn shared_isolation_maps_everyone_to_the_first_range() {
        let mut a = Allocations::default();
        let one = a
            .allocate("a", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::Shared }, &runs_go_on)
            .unwrap();
        assert_eq!(
            a.allocate("b", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::Shared }, &runs_go_on)
                .unwrap(),
            one
        );
    }

    #[test]
    fn workloads_that_shared_a_slice_each_get_their_own_once_isolated() {
        let per = Isolation::PerWorkload;
        // The daemon ran with `shared`, then `per-workload`.
        let mut a = Allocations::default();
        for name in ["a", "b", "c"] {
            a.allocate(name, Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::Shared }, &none_run)
                .unwrap();
        }
        let slices: Vec<Slice> = ["a", "b", "c"]
            .map(|n| a.allocate(n, Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &none_run).unwrap())
            .into();
        assert!(slices[0] != slices[1] && slices[1] != slices[2] && slices[0] != slices[2], "{slices:?}");
        // A table written before shared slices were marked: each entry an
        // other overlaps is given up, until none is shared.
        let mut legacy: Allocations =
            serde_json::from_value(serde_json::json!({ "slices": { "a": slices[0], "b": slices[0], "c": slices[0] } }))
                .unwrap();
        let slices: Vec<Slice> = ["a", "b", "c"]
            .map(|n| {
                legacy.allocate(n, Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &none_run).unwrap()
            })
            .into();
        assert!(slices[0] != slices[1] && slices[1] != slices[2] && slices[0] != slices[2], "{slices:?}");
    }

    #[test]
    fn a_run_with_shared_isolation_takes_no_workloads_slice_from_it() {
        let per = Isolation::PerWorkload;
        let mut a = Allocations::default();
        let web =
            a.allocate("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap();
        // `paddock run --isolation shared x.toml`: the first slice, web's.
        assert_eq!(
            a.allocate("x", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::Shared }, &runs_go_on)
                .unwrap(),
            web
        );
        assert_eq!(
            a.allocate("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap(),
            web,
            "web keeps its slice"
        );
        // x as a workload of its own: a slice of its own.
        let x = a.allocate("x", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap();
        assert!(!x.uid.overlaps(&web.uid) && !x.gid.overlaps(&web.gid), "{x:?} {web:?}");
        assert_eq!(
            a.allocate("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap(),
            web
        );
        // What the table says of it is written, and read back.
        let dir = tempfile::tempdir().unwrap();
        a.allocate("y", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::Shared }, &runs_go_on)
            .unwrap();
        a.save(dir.path()).unwrap();
        assert_eq!(Allocations::load(dir.path()).unwrap(), a);
        a.free("y");
        assert_eq!(serde_json::to_value(&a).unwrap().get("shared"), None, "none shared: the table as before");
    }

    #[test]
    fn a_range_added_to_one_file_moves_no_one() {
        let per = Isolation::PerWorkload;
        let mut a = Allocations::default();
        let first =
            a.allocate("a", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap();
        let second =
            a.allocate("b", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap();
        let before = IdRange { start: 50_000_000, count: 65536 };
        for (uids, gids) in [(vec![before, R], vec![R]), (vec![R], vec![before, R])] {
            assert_eq!(
                a.allocate("a", Cutting { uids: &uids, gids: &gids, size: 65536, isolation: per }, &runs_go_on)
                    .unwrap(),
                first
            );
            assert_eq!(
                a.allocate("b", Cutting { uids: &uids, gids: &gids, size: 65536, isolation: per }, &runs_go_on)
                    .unwrap(),
                second
            );
        }
        // A slice no longer inside the ranges is not kept.
        let later = IdRange { start: R.start + 65536, count: 65536 * 2 };
        assert_ne!(
            a.allocate("a", Cutting { uids: &[later], gids: &[later], size: 65536, isolation: per }, &runs_go_on)
                .unwrap(),
            first
        );
    }

    /// Every name's runs have ended but those of `live` and `x`, which
    /// run on.
    fn ended(name: &str, _: &[RunProcess]) -> bool {
        !["live", "x"].contains(&name)
    }

    #[test]
    fn the_slice_of_a_run_that_ended_is_given_to_another_when_none_is_free() {
        let per = Isolation::PerWorkload;
        let two = IdRange { start: 100000, count: 65536 * 2 };
        let mut a = Allocations::default();
        let kept = a
            .allocate_for_run("once", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended)
            .unwrap();
        assert_eq!(
            a.allocate_for_run("once", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended)
                .unwrap(),
            kept,
            "kept for it"
        );
        let live = a
            .allocate_for_run("live", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended)
            .unwrap();
        assert_eq!(
            a.allocate("web", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended).unwrap(),
            kept,
            "the ended run's, none being free"
        );
        assert_eq!(a.get("once"), None);
        assert!(matches!(
            a.allocate("db", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended),
            Err(AllocError::Exhausted { .. })
        ));
        assert_eq!(a.get("live"), Some(&live), "a run that runs keeps its slice");
        // A slice the daemon took over from a run's name is the daemon's.
        a.free("web");
        a.allocate_for_run("db", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended).unwrap();
        a.allocate("db", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended).unwrap();
        assert!(
            a.allocate_for_run("other", Cutting { uids: &[two], gids: &[two], size: 65536, isolation: per }, &ended)
                .is_err()
        );
    }

    #[test]
    fn a_run_shares_a_daemons_workloads_slice_but_never_changes_it() {
        let per = Isolation::PerWorkload;
        let mut a = Allocations::default();
        let web =
            a.allocate("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap();
        assert_eq!(
            a.allocate_for_run("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &ended).unwrap(),
            web
        );
        let before = a.clone();
        let err = a
            .allocate_for_run("web", Cutting { uids: &[R], gids: &[R], size: 131072, isolation: per }, &ended)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the id slice of web is the daemon's workload's (65536 ids from 100000), which a `paddock run` may share but not change; this run's settings would give it another (slice size 131072, its isolation, or other ranges): run it with the daemon's settings, or name its manifest otherwise"
        );
        assert_eq!(a, before, "nothing changed");
        // Not the run's: never given to another.
        let one = IdRange { start: 100000, count: 65536 };
        assert!(matches!(
            a.allocate("db", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &ended),
            Err(AllocError::Exhausted { .. })
        ));
    }

    #[test]
    fn a_daemons_workload_gone_leaves_its_slice_to_a_run_that_shares_it() {
        let per = Isolation::PerWorkload;
        let one = IdRange { start: 100000, count: 65536 };
        let cutting = Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per };
        let mut a = Allocations::default();
        let x = a.allocate("x", cutting, &runs_go_on).unwrap();
        assert_eq!(a.allocate_for_run("x", cutting, &ended).unwrap(), x, "the run shares the daemon's slice");
        // The manifest is deleted while the run of x goes on: its ids stay x's.
        assert_eq!(a.release("x", &ended), None);
        assert_eq!(a.get("x"), Some(&x));
        assert!(matches!(a.allocate("web", cutting, &ended), Err(AllocError::Exhausted { .. })));
        // Once that run has ended, the slice goes to the next.
        assert_eq!(a.allocate("web", cutting, &none_run).unwrap(), x);
        // With no run of its name, a deleted workload's slice is free at once.
        assert_eq!(a.release("web", &ended), Some(x));
        assert_eq!(a.allocate("db", cutting, &ended).unwrap(), x);
    }

    #[test]
    fn a_file_of_a_runs_name_deleted_before_the_daemon_gave_it_a_slice_leaves_the_runs() {
        let one = IdRange { start: 100000, count: 65536 };
        let cutting = Cutting { uids: &[one], gids: &[one], size: 65536, isolation: Isolation::PerWorkload };
        let mut a = Allocations::default();
        let x = a.allocate_for_run("x", cutting, &ended).unwrap();
        assert_eq!(a.release("x", &ended), None, "a run of x goes on");
        assert_eq!(a.get("x"), Some(&x));
        assert!(matches!(a.allocate("web", cutting, &ended), Err(AllocError::Exhausted { .. })));
    }

    /// A name given another slice while runs of it go on (other settings:
    /// the daemon's, or another run's): the one they have stays taken
    /// until they end.
    #[test]
    fn a_slice_that_runs_have_stays_taken_when_their_name_is_given_another() {
        let per = Isolation::PerWorkload;
        let four = IdRange { start: 100000, count: 4 * 65536 };
        let small = Cutting { uids: &[four], gids: &[four], size: 65536, isolation: per };
        let big = Cutting { uids: &[four], gids: &[four], size: 131072, isolation: per };
        // The daemon takes over a run's name with other ranges (its
        // subuid file lost the first slice).
        let mut a = Allocations::default();
        let run = a.allocate_for_run("x", small, &ended).unwrap();
        let later = IdRange { start: 100000 + 65536, count: 3 * 65536 };
        let daemons = a.allocate("x", Cutting { uids: &[later], gids: &[later], ..small }, &ended).unwrap();
        assert_ne!(daemons, run);
        assert_eq!(a.slices_of("x"), [daemons, run]);
        for name in ["y", "z"] {
            let other = a.allocate(name, small, &ended).unwrap();
            assert!(!other.uid.overlaps(&run.uid) && !other.uid.overlaps(&daemons.uid), "{other:?}");
        }
        assert!(matches!(a.allocate("w", small, &ended), Err(AllocError::Exhausted { .. })), "{a:?}");
        // Once they end, it is free again.
        assert_eq!(a.allocate("w", small, &none_run).unwrap(), run);
        assert_eq!(a.slices_of("x"), [daemons]);

        // The daemon's workload shared with a run, then given another size.
        let mut a = Allocations::default();
        let web = a.allocate("x", small, &runs_go_on).unwrap();
        assert_eq!(a.allocate_for_run("x", small, &ended).unwrap(), web);
        let resized = a.allocate("x", big, &ended).unwrap();
        assert_ne!(resized, web);
        assert!(!a.allocate("y", small, &ended).unwrap().uid.overlaps(&web.uid));

        // Two runs of one manifest with other settings: the first's stays taken.
        let mut a = Allocations::default();
        let first = a.allocate_for_run("x", small, &ended).unwrap();
        let second = a.allocate_for_run("x", big, &ended).unwrap();
        assert_ne!(first, second);
        assert_eq!(a.slices_of("x"), [second, first]);
        let y = a.allocate("y", small, &ended).unwrap();
        assert!(!y.uid.overlaps(&first.uid) && !y.uid.overlaps(&second.uid), "{y:?}");
        // A third with the first's settings has the first's again, not held beside.
        assert_eq!(a.allocate_for_run("x", small, &ended).unwrap(), first);
        assert_eq!(a.slices_of("x"), [first, second]);
        // Freed with the name (its runs all ended).
        a.free("x");
        assert!(a.slices_of("x").is_empty());
    }

    #[test]
    fn a_runs_slice_goes_to_another_only_once_no_run_holds_its_name() {
        let per = Isolation::PerWorkload;
        let one = IdRange { start: 100000, count: 65536 };
        let mut a = Allocations::default();
        let x = a
            .allocate_for_run("x", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &ended)
            .unwrap();
        let before = a.clone();
        assert_eq!(
            a.allocate_for_run("x", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &ended)
                .unwrap(),
            x
        );
        assert_eq!(a, before, "a run of a name that has its slice changes nothing: the table is not written again");
        // A run of x holds it: its slice is not free.
        assert!(matches!(
            a.allocate("web", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &ended),
            Err(AllocError::Exhausted { .. })
        ));
        assert_eq!(a.get("x"), Some(&x));
        // None does.
        assert_eq!(
            a.allocate("web", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &none_run).unwrap(),
            x
        );
    }

    /// A run's lock file names its slices, and is written only when they
    /// change (a run of a manifest whose slice stays writes nothing).
    #[test]
    fn a_runs_lock_file_is_written_only_when_its_slices_change() {
        use std::os::unix::fs::MetadataExt;
        let state = tempfile::tempdir().unwrap();
        let path = state.path().join("runs/x.lock");
        let slice = |start| Slice { uid: IdRange { start, count: 65536 }, gid: IdRange { start, count: 65536 } };
        let changed = || {
            let m = std::fs::metadata(&path).unwrap();
            (m.ctime(), m.ctime_nsec())
        };
        let hold = RunHold::take(state.path(), "x").unwrap();
        hold.record(&[slice(100000), slice(165536)]).unwrap();
        let written = changed();
        std::thread::sleep(std::time::Duration::from_millis(20));
        hold.record(&[slice(100000), slice(165536)]).unwrap();
        assert_eq!(changed(), written, "the same slices written again");
        hold.record(&[slice(100000)]).unwrap();
        let read: Vec<Slice> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, [slice(100000)], "a shorter list leaves nothing of the longer");
    }

    #[test]
    fn runs_of_one_manifest_side_by_side_hold_it_until_the_last_ends() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path();
        assert!(RunHold::all_ended(dir, "x", &[]), "no run ever held it");
        let first = RunHold::take(dir, "x").unwrap();
        let second = RunHold::take(dir, "x").unwrap();
        assert!(!RunHold::all_ended(dir, "x", &[]));
        assert!(RunHold::all_ended(dir, "y", &[]), "another name's runs are not x's");
        drop(second);
        assert!(!RunHold::all_ended(dir, "x", &[]), "the first runs on");
        drop(first);
        assert!(RunHold::all_ended(dir, "x", &[]));
        // Asking takes no hold.
        assert!(RunHold::all_ended(dir, "x", &[]));
        let _again = RunHold::take(dir, "x").unwrap();
        assert!(!RunHold::all_ended(dir, "x", &[]));
    }

    /// What is planted at a lock file's place, or a name from a damaged
    /// table, counts as a run still holding the name (never freed in
    /// doubt) and is never waited on: a FIFO's open would block the
    /// daemon's starts under the table's lock.
    #[test]
    fn a_lock_file_that_is_no_regular_file_or_no_names_holds_and_never_blocks() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path();
        std::fs::create_dir(dir.join("runs")).unwrap();
        nix::unistd::mkfifo(&dir.join("runs/fifo.lock"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(dir.join("runs/dir.lock")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir_owned = dir.to_owned();
        std::thread::spawn(move || {
            let _ = tx.send((RunHold::all_ended(&dir_owned, "fifo", &[]), RunHold::take(&dir_owned, "fifo").err()));
        });
        let (ended, taken) = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the FIFO's open blocked");
        assert!(!ended, "a FIFO counts as a run's hold");
        // (For writing, a FIFO with no reader is ENXIO at once.)
        assert!(taken.is_some_and(|e| e.to_string().contains("runs/fifo.lock")));
        assert!(!RunHold::all_ended(dir, "dir", &[]));
        assert!(RunHold::take(dir, "dir").err().is_some_and(|e| e.to_string().contains("runs/dir.lock")));
        std::fs::write(dir.join("escape.lock"), "").unwrap();
        assert!(!RunHold::all_ended(dir, "../escape", &[]), "a name that is no workload's names no file");
        assert!(RunHold::take(dir, "../escape").err().is_some_and(|e| e.to_string().contains("no workload's name")));
    }

    #[test]
    fn runs_an_older_paddock_marked_by_process_are_kept_and_hold_their_slice_while_they_run() {
        let per = Isolation::PerWorkload;
        let one = IdRange { start: 100000, count: 65536 };
        let s0 = Slice { uid: one, gid: one };
        let older = |started: u64| -> Allocations {
            serde_json::from_value(serde_json::json!({
                "slices": { "x": s0 },
                "runs": { "x": [{ "pid": std::process::id(), "started": started }] },
            }))
            .unwrap()
        };
        let me = crate::sandbox::process::start_time(std::process::id() as i32).unwrap();
        let state = tempfile::tempdir().unwrap();
        let ended = RunHold::ended_under(state.path());
        // This process, as the older paddock's run that runs on: not given away.
        let mut a = older(me);
        assert!(matches!(
            a.allocate("web", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &ended),
            Err(AllocError::Exhausted { .. })
        ));
        // Written back as read, for that paddock; the new marks under their own key.
        a.allocate_for_run("y", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &ended).unwrap();
        let written = serde_json::to_value(&a).unwrap();
        assert_eq!(written["runs"], serde_json::json!({ "x": [{ "pid": std::process::id(), "started": me }] }));
        assert_eq!(written["run_names"], serde_json::json!(["y"]));
        // A run of x itself: the older paddock's runs of x that have ended go.
        let mut a = older(me + 1);
        a.allocate_for_run("x", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &ended).unwrap();
        assert_eq!(serde_json::to_value(&a).unwrap().get("runs"), None, "{a:?}");
        // A run that has ended (another start time): its slice is given away.
        let mut a = older(me + 1);
        assert_eq!(
            a.allocate("web", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &ended).unwrap(),
            s0
        );
    }

    #[test]
    fn a_run_with_shared_isolation_marks_nothing_of_a_daemons_workload() {
        let per = Isolation::PerWorkload;
        let mut a = Allocations::default();
        let web =
            a.allocate("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap();
        a.allocate_for_run("x", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::Shared }, &ended)
            .unwrap();
        let before = a.clone();
        assert_eq!(
            a.allocate_for_run(
                "web",
                Cutting { uids: &[R], gids: &[R], size: 65536, isolation: Isolation::Shared },
                &ended
            )
            .unwrap(),
            web
        );
        assert_eq!(a, before, "nothing of web's changed");
        assert_eq!(
            a.allocate("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap(),
            web,
            "web keeps its slice"
        );
    }

    #[test]
    fn a_table_an_older_paddock_wrote_keeps_its_entries_and_the_daemons_keep_their_slices() {
        let per = Isolation::PerWorkload;
        let s0 = Slice { uid: IdRange { start: 100000, count: 65536 }, gid: IdRange { start: 100000, count: 65536 } };
        // web, the daemon's; x, a shared run's on web's slice; old, a run's.
        let old = |names: &[&str]| -> Allocations {
            let slices: serde_json::Map<String, serde_json::Value> =
                names.iter().map(|n| (n.to_string(), serde_json::to_value(s0).unwrap())).collect();
            serde_json::from_value(serde_json::json!({ "slices": slices })).unwrap()
        };
        let mut a = old(&["web", "x"]);
        assert_eq!(
            a.allocate("web", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &runs_go_on).unwrap(),
            s0,
            "the daemon's keeps its own"
        );
        let x =
            a.allocate_for_run("x", Cutting { uids: &[R], gids: &[R], size: 65536, isolation: per }, &ended).unwrap();
        assert!(!x.uid.overlaps(&s0.uid), "{x:?}");
        // An older run's entry is never given away (its runs are unknown),
        // and a run may change it.
        let one = IdRange { start: 100000, count: 65536 };
        let mut a = old(&["once"]);
        assert!(matches!(
            a.allocate("web", Cutting { uids: &[one], gids: &[one], size: 65536, isolation: per }, &none_run),
            Err(AllocError::Exhausted { .. })
        ));
        assert!(
            a.allocate_for_run("once", Cutting { uids: &[R], gids: &[R], size: 131072, isolation: per }, &ended)
                .is_ok()
        );
        // Names the daemon knows are claimed as its own.
        let mut a = old(&["web"]);
        a.claim(["web", "unknown"]);
        let refused =
            a.allocate_for_run("web", Cutting { uids: &[R], gids: &[R], size: 131072, isolation: per }, &ended);
        assert!(matches!(refused, Err(AllocError::DaemonsSlice { .. })), "{refused:?}");
        assert_eq!(a.get("unknown"), None);
    }

    #[test]
    fn a_small_range_is_one_slice_of_its_size() {
        let small = IdRange { start: 500000, count: 1000 };
        assert_eq!(cut(&[small, R], 65536).count(), 4);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(Allocations::FILE), "{not json").unwrap();
        assert!(matches!(Allocations::load(dir.path()), Err(AllocError::Read { .. })));
    }
}
