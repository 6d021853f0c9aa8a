//! What the supervisor keeps on disk, behind a trait so tests can keep it
//! in memory: each workload's id slice (the id table, `idmap.json`) and
//! what it keeps across daemon restarts (`kept.rs`). Kept files are
//! written, each fsynced, by a thread of their own: a burst of a thousand
//! one-shots ending is a thousand fsyncs, which must not hold up the
//! event loop (measured: 2 s of a 1000-workload burst). The end of a
//! one-shot is the exception: the event loop waits until the writer has
//! written it before its sandbox is let go (`keep_now`), so a daemon that
//! dies right after never runs it again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::kept::{Kept, KeptStore};
use crate::idmap::{
    AccountFiles, AllocError, Allocations, Cutting, Isolation, RemapRanges, RunHold, Slice, read_remap_ranges,
};
use crate::model::WorkloadName;
use crate::reconcile::{Blame, StartFailure};

pub trait Store {
    /// The slices of workloads about to start, in one update of the table.
    fn slices(&mut self, names: &[&WorkloadName]) -> BTreeMap<WorkloadName, Result<Slice, StartFailure>>;
    /// A workload's slice, when it has one.
    fn slice(&self, name: &WorkloadName) -> Option<Slice>;
    /// Writes what is kept of a workload (its slice, hold, end and
    /// counts), behind: within `SETTLE` on a disk that answers.
    fn keep(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()>;
    /// Writes what is kept of a workload now, durably, before returning
    /// (an end that must survive a daemon that dies next).
    fn keep_now(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        self.keep(name, kept)
    }
    /// `keep_now`, but waiting a moment at most (an operator's request
    /// waits on it, and so does the event loop): past it, the write goes
    /// on behind, as `keep`'s.
    fn keep_soon(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        self.keep_now(name, kept)
    }
    /// `keep_soon` of many at once (the daemon's own stop writes one for
    /// every workload before their signals go): one batch, one wait.
    fn keep_all_soon(&mut self, all: &[(WorkloadName, Kept)]) -> Vec<std::io::Result<()>> {
        all.iter().map(|(name, kept)| self.keep_soon(name, kept)).collect()
    }
    /// Calls `then` once what is kept of a workload is on disk: at once
    /// where nothing of it waits to be written (the ack of an end that
    /// could not be written waits for it, so that its init keeps it for a
    /// successor until then).
    fn once_kept(&mut self, _name: &WorkloadName, then: Box<dyn FnOnce() + Send>) {
        then()
    }
    /// Drops what was kept of a workload, and frees its slice unless
    /// told to keep it (`free_slice`: processes may still run as its ids;
    /// then what is kept says so, `Kept::reserved`).
    fn forget(&mut self, name: &WorkloadName, free_slice: bool) -> std::io::Result<()>;
    /// How many slices are in use, and how many there are.
    fn slice_counts(&self) -> (usize, usize);
    /// Whether workloads share one slice (`isolation = "shared"`): a
    /// process running as its ids is then no sign of any one workload.
    fn slices_shared(&self) -> bool {
        false
    }
}

/// How long `keep_soon` waits for the disk.
const SOON: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a `keep` waits, at most, to be written with what follows it.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The state directory's id table and kept files.
pub struct DiskStore {
    state_dir: PathBuf,
    ranges: RemapRanges,
    isolation: Isolation,
    slice_size: u32,
    writer: Option<Writer>,
    /// The slices handed out, so `status` reads no file.
    known: BTreeMap<WorkloadName, Slice>,
    /// Where `ranges` were read from, to follow edits of the files.
    following: Option<Following>,
}

/// The account files the ranges come from, and what they were when last
/// read: a workload given a slice after an edit of /etc/subuid gets it
/// from the ranges the files hold then, as after a restart of the daemon,
/// never from ranges taken away (and perhaps given to another user since).
struct Following {
    files: AccountFiles,
    user: String,
    seen: AccountStamps,
}

/// What tells an edit of the account files the ranges come from: each
/// file's inode (an atomic replace makes a new one), length and change
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStamps(Vec<Option<FileStamp>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    changed: (i64, i64),
}

impl AccountStamps {
    /// The files as they are now: taken before the ranges are read, so an
    /// edit in between is seen.
    pub fn of(files: &AccountFiles) -> Self {
        use std::os::unix::fs::MetadataExt;
        let stamp = |path: &PathBuf| {
            let m = std::fs::metadata(path).ok()?;
            Some(FileStamp { inode: m.ino(), len: m.len(), changed: (m.ctime(), m.ctime_nsec()) })
        };
        Self([&files.passwd.path, &files.subuid.path, &files.subgid.path].map(stamp).into())
    }
}

impl DiskStore {
    /// Hands each `kept` to the writer as its workload's latest, all
    /// before any is waited for (the writer takes them in one batch), and
    /// waits up to `wait` in all for them to be written (without a writer,
    /// writes them here): None for each the disk did not answer in time.
    fn written_within(
        &self,
        all: &[(WorkloadName, Kept)],
        wait: std::time::Duration,
    ) -> Vec<Option<std::io::Result<()>>> {
        let here = |name: &WorkloadName, kept: &Kept| KeptStore::new(&self.state_dir).write(name, kept);
        let queued: Vec<_> = all
            .iter()
            .map(|(name, kept)| {
                let writer = self.writer.as_ref()?;
                let (done, written) = std::sync::mpsc::sync_channel(1);
                writer.queue.send(Write::Now(name.clone(), kept.clone(), done)).ok().map(|()| written)
            })
            .collect();
        let deadline = std::time::Instant::now() + wait;
        all.iter()
            .zip(queued)
            .map(|((name, kept), written)| match written {
                None => Some(here(name, kept)),
                Some(written) => {
                    written.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).ok()
                }
            })
            .collect()
    }

    pub fn new(state_dir: PathBuf, ranges: RemapRanges, isolation: Isolation, slice_size: u32) -> Self {
        let writer = Writer::start(KeptStore::new(&state_dir));
        let known = Allocations::load(&state_dir)
            .map(|t| t.iter().filter_map(|(n, s)| Some((WorkloadName::try_from(n).ok()?, *s))).collect())
            .unwrap_or_default();
        DiskStore { state_dir, ranges, isolation, slice_size, writer: Some(writer), known, following: None }
    }

    /// Reads the ranges again from `files` whenever they change from
    /// `seen` (taken before the ranges given to `new` were read).
    pub fn following(mut self, files: AccountFiles, user: &str, seen: AccountStamps) -> Self {
        self.following = Some(Following { files, user: user.to_owned(), seen });
        self
    }

    /// The ranges as the files hold them now, if they changed; when they
    /// cannot be read, or lost the user's range, those read last are kept,
    /// and that is said once per edit.
    fn follow_ranges(&mut self) {
        let Some(following) = &mut self.following else { return };
        let now = AccountStamps::of(&following.files);
        if now == following.seen {
            return;
        }
        following.seen = now;
        match read_remap_ranges(&following.files, &following.user, self.slice_size) {
            Ok(Some(ranges)) if ranges != self.ranges => {
                tracing::info!(
                    user = %ranges.user,
                    uids = ?ranges.uids,
                    gids = ?ranges.gids,
                    "the remap ranges changed: slices are given from them from now on (a workload whose slice is no longer inside them gets a new one at its next start)"
                );
                for warning in crate::idmap::account_overlaps(&following.files, &ranges) {
                    tracing::warn!("{warning}");
                }
                self.ranges = ranges;
            }
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                user = %following.user,
                subuid = %following.files.subuid.display(),
                subgid = %following.files.subgid.display(),
                "the remap user or its ranges are gone from the account files: slices are given from the ranges read before; add them back (a daemon's start adds the default user's)"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot read the remap ranges after an edit of the account files: slices are given from the ranges read before; mend the file"
            ),
        }
    }

    /// Reads the id table again (after recovery rebuilt it).
    pub fn refresh(&mut self) {
        if let Ok(table) = Allocations::load(&self.state_dir) {
            self.known = table.iter().filter_map(|(n, s)| Some((WorkloadName::try_from(n).ok()?, *s))).collect();
        }
    }

    fn send(&self, name: &WorkloadName, kept: Option<Kept>) {
        if let Some(writer) = &self.writer {
            let _ = writer.queue.send(Write::Keep(name.clone(), kept));
        }
    }

    /// Waits (up to `timeout`) until everything queued is written: before
    /// the daemon re-executes itself. Returns whether it all was (not when
    /// a write fails, a full disk, or the time is up).
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let Some(writer) = &self.writer else { return true };
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        writer.queue.send(Write::Flush(done)).is_ok() && wait.recv_timeout(timeout).unwrap_or(false)
    }
}

impl Drop for DiskStore {
    /// Everything queued is written before the daemon exits.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            drop(writer.queue);
            let _ = writer.thread.join();
        }
    }
}

/// The thread that writes kept files: the latest state of each workload,
/// all that is pending at once, each file fsynced and their directory
/// once; a write that fails (a full disk) is said once and tried again
/// every second until it succeeds.
struct Writer {
    queue: std::sync::mpsc::Sender<Write>,
    thread: std::thread::JoinHandle<()>,
}

/// What the writer is asked.
enum Write {
    /// Write (or, with None, remove) a workload's kept file.
    Keep(WorkloadName, Option<Kept>),
    /// Say when everything before this is written (true), or could not be.
    Flush(std::sync::mpsc::SyncSender<bool>),
    /// Write a workload's kept file with what is pending, and say how that went.
    Now(WorkloadName, Kept, std::sync::mpsc::SyncSender<std::io::Result<()>>),
    /// Call this once nothing of the workload's waits to be written.
    Then(WorkloadName, Box<dyn FnOnce() + Send>),
}

impl Writer {
    fn start(store: KeptStore) -> Self {
        let (queue, receive) = std::sync::mpsc::channel::<Write>();
        let thread = std::thread::Builder::new()
            .name("paddock-kept".into())
            .spawn(move || {
                let mut pending: BTreeMap<WorkloadName, Option<Kept>> = BTreeMap::new();
                let mut flushes = Vec::new();
                let mut nows = Vec::new();
                let mut waiters: Vec<(WorkloadName, Box<dyn FnOnce() + Send>)> = Vec::new();
                let mut failing = false;
                // When what `Keep` queued is written; the daemon's end.
                let (mut due, mut closed) = (None::<std::time::Instant>, false);
                loop {
                    let next = if pending.is_empty() {
                        receive.recv().ok()
                    } else {
                        let wait = match (failing, due) {
                            (false, Some(due)) => due.saturating_duration_since(std::time::Instant::now()),
                            _ => std::time::Duration::from_secs(1),
                        };
                        match receive.recv_timeout(wait) {
                            Ok(item) => Some(item),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) if failing => {
                                let lost: Vec<&WorkloadName> = pending.keys().collect();
                                tracing::error!(workloads = ?lost, "the daemon ends with what is kept of these workloads unwritten (a full disk?): their holds, ends or restart counts are lost");
                                return;
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                                closed = true;
                                None
                            }
                        }
                    };
                    let mut take = |item: Write| match item {
                        Write::Keep(name, kept) => {
                            pending.insert(name, kept);
                            due.get_or_insert_with(|| std::time::Instant::now() + SETTLE);
                        }
                        Write::Flush(done) => flushes.push(done),
                        Write::Now(name, kept, done) => {
                            pending.insert(name.clone(), Some(kept));
                            nows.push((name, done));
                        }
                        Write::Then(name, then) => waiters.push((name, then)),
                    };
                    match next {
                        Some(item) => {
                            take(item);
                            receive.try_iter().for_each(&mut take);
                        }
                        None if pending.is_empty() => return,
                        None => {}
                    }
                    // What `Keep` queued waits a moment for more (a restart
                    // queues its count twice), and is not written while the
                    // restart it follows runs; unless something is asked
                    // for now, or the daemon ends.
                    let settling = due.is_some_and(|d| std::time::Instant::now() < d);
                    if settling && nows.is_empty() && flushes.is_empty() && !failing && !closed {
                        continue;
                    }
                    due = None;
                    // All that is pending, with one fsync of the directory.
                    let mut batch = std::mem::take(&mut pending);
                    let mut unwritten = BTreeMap::new();
                    let failed = store.write_all(&batch);
                    for (name, done) in nows.drain(..) {
                        let _ = done.send(match failed.iter().find(|(n, _)| *n == name) {
                            Some((_, e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
                            None => Ok(()),
                        });
                    }
                    for (name, e) in failed {
                        if !failing {
                            let file = store.path(&name);
                            tracing::error!(workload = %name, file = %file.display(), error = %e, "cannot write what is kept of it (hold, end); retrying every second: free space on that filesystem, or mend what keeps it from being written");
                        }
                        if let Some(kept) = batch.remove(&name) {
                            unwritten.insert(name, kept);
                        }
                    }
                    if failing && unwritten.is_empty() {
                        tracing::warn!("kept state is written again");
                    }
                    failing = !unwritten.is_empty();
                    pending = unwritten;
                    let (ready, waiting) =
                        std::mem::take(&mut waiters).into_iter().partition::<Vec<_>, _>(|(n, _)| !pending.contains_key(n));
                    waiters = waiting;
                    ready.into_iter().for_each(|(_, then)| then());
                    for done in flushes.drain(..) {
                        let _ = done.send(!failing);
                    }
                }
            })
            .expect("a thread can be started at the daemon's start");
        Writer { queue, thread }
    }
}

/// An id table that cannot be written (a full disk) is the daemon's
/// trouble, not the workload's: the start is tried again shortly.
fn failure(e: AllocError) -> StartFailure {
    let blame = match &e {
        AllocError::Exhausted { .. } | AllocError::DaemonsSlice { .. } => Blame::Host,
        AllocError::Read { .. }
        | AllocError::Write { .. }
        | AllocError::MoveAside { .. }
        | AllocError::Hold { .. }
        | AllocError::Record { .. } => Blame::Daemon,
    };
    StartFailure::new(blame, e)
}

impl Store for DiskStore {
    fn slices(&mut self, names: &[&WorkloadName]) -> BTreeMap<WorkloadName, Result<Slice, StartFailure>> {
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return out;
        }
        self.follow_ranges();
        let (ranges, size, isolation) = (&self.ranges, self.slice_size, self.isolation);
        let state_dir = &self.state_dir;
        let runs_ended = RunHold::ended_under(state_dir);
        let result = Allocations::update(state_dir, |t| {
            for name in names {
                let slice = t.allocate(
                    name.as_str(),
                    Cutting { uids: &ranges.uids, gids: &ranges.gids, size, isolation },
                    &runs_ended,
                );
                out.insert((*name).clone(), slice.map_err(failure));
            }
            Ok(())
        });
        if let Err(e) = result {
            let failed = failure(e);
            for name in names {
                out.insert((*name).clone(), Err(failed.clone()));
            }
        }
        for (name, slice) in &out {
            if let Ok(slice) = slice {
                self.known.insert(name.clone(), *slice);
            }
        }
        out
    }

    fn slice(&self, name: &WorkloadName) -> Option<Slice> {
        self.known.get(name).copied()
    }

    fn keep(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        self.send(name, Some(kept.clone()));
        Ok(())
    }

    fn keep_now(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        // Through the writer, which holds the latest state of each workload:
        // no older write of this one, queued or retried, can land after it.
        // Waited for 5 s at most (a hung disk must not hold the event loop
        // for good); then written here too. That is safe now: the writer
        // holds this state as the latest, so what it writes later is this.
        let all = [(name.clone(), kept.clone())];
        match self.written_within(&all, std::time::Duration::from_secs(5)).pop().flatten() {
            Some(written) => written,
            None => KeptStore::new(&self.state_dir).write(name, kept),
        }
    }

    fn once_kept(&mut self, name: &WorkloadName, then: Box<dyn FnOnce() + Send>) {
        match &self.writer {
            Some(writer) => {
                if let Err(std::sync::mpsc::SendError(Write::Then(_, then))) =
                    writer.queue.send(Write::Then(name.clone(), then))
                {
                    then()
                }
            }
            None => then(),
        }
    }

    fn keep_soon(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        self.keep_all_soon(&[(name.clone(), kept.clone())]).pop().unwrap_or(Ok(()))
    }

    fn keep_all_soon(&mut self, all: &[(WorkloadName, Kept)]) -> Vec<std::io::Result<()>> {
        let written = self.written_within(all, SOON);
        all.iter()
            .zip(written)
            .map(|((name, _), written)| {
                // The writer's latest for this workload: written when the disk answers.
                written.unwrap_or_else(|| {
                    tracing::warn!(workload = %name, "the disk is slow: what is kept of it is written behind");
                    Ok(())
                })
            })
            .collect()
    }

    fn forget(&mut self, name: &WorkloadName, free_slice: bool) -> std::io::Result<()> {
        if !free_slice {
            // Durably: a daemon that died next must still hold the name.
            let slice = self.known.get(name).copied();
            return self.keep_now(name, &Kept { slice, reserved: true, ..Kept::default() });
        }
        self.send(name, None);
        self.known.remove(name);
        let state_dir = &self.state_dir;
        let runs_ended = RunHold::ended_under(state_dir);
        Allocations::update(state_dir, |t| Ok(t.release(name.as_str(), &runs_ended)))
            .map(drop)
            .map_err(std::io::Error::other)
    }

    fn slices_shared(&self) -> bool {
        self.isolation == Isolation::Shared
    }

    fn slice_counts(&self) -> (usize, usize) {
        let used: std::collections::BTreeSet<u32> = self.known.values().map(|s| s.uid.start).collect();
        let total = crate::idmap::slice_count(&self.ranges.uids, &self.ranges.gids, self.slice_size);
        (used.len(), total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::RemapRanges;
    use crate::reconcile::Version;

    /// A store in `dir`, with no id ranges (these tests keep no slice).
    fn store(dir: &std::path::Path) -> DiskStore {
        let ranges = RemapRanges { user: "paddock".into(), uids: Vec::new(), gids: Vec::new() };
        DiskStore::new(dir.to_owned(), ranges, Isolation::default(), 65536)
    }

    fn held(version: u64) -> Kept {
        Kept { hold: Some(Version(version)), ..Kept::default() }
    }

    #[test]
    fn what_is_kept_now_is_never_overwritten_by_an_older_write_being_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let name = WorkloadName::try_from("once").unwrap();
        // A directory where its file belongs: every write of it fails until
        // it is gone, and the writer retries the latest every second.
        let file = dir.path().join("workloads/once.json");
        std::fs::create_dir_all(&file).unwrap();
        store.keep(&name, &held(1)).unwrap();
        assert!(!store.flush(std::time::Duration::from_secs(5)), "a flush that could not write is said");
        assert!(store.keep_now(&name, &held(2)).is_err(), "a write that failed is said");
        std::fs::remove_dir(&file).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !file.is_file() {
            assert!(std::time::Instant::now() < deadline, "the writer never wrote {}", file.display());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Then nothing is left to write: what is there stays.
        assert!(store.flush(std::time::Duration::from_secs(5)));
        let kept = KeptStore::new(dir.path()).load(dir.path()).kept;
        assert_eq!(kept[&name].hold, Some(Version(2)), "an older write landed after what was kept now");
    }

    #[test]
    fn what_is_kept_now_is_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let name = WorkloadName::try_from("once").unwrap();
        store.keep(&name, &held(1)).unwrap();
        store.keep_now(&name, &held(2)).unwrap();
        let kept = KeptStore::new(dir.path()).load(dir.path()).kept;
        assert_eq!(kept[&name].hold, Some(Version(2)));
        // So is what is kept soon, on a disk that answers.
        store.keep(&name, &held(3)).unwrap();
        store.keep_soon(&name, &held(4)).unwrap();
        let kept = KeptStore::new(dir.path()).load(dir.path()).kept;
        assert_eq!(kept[&name].hold, Some(Version(4)));
    }

    #[test]
    fn slices_are_given_from_the_ranges_the_files_hold_now() {
        let dir = tempfile::tempdir().unwrap();
        let file = |key| crate::idmap::AccountFile {
            path: dir.path().join(key),
            named_by: crate::idmap::NamedBy::Config { key, at: None },
        };
        let files = AccountFiles {
            passwd: file("passwd"),
            group: file("group"),
            subuid: file("subuid"),
            subgid: file("subgid"),
        };
        std::fs::write(&files.passwd.path, "ops:x:999:999::/:/usr/sbin/nologin\n").unwrap();
        std::fs::write(&files.group.path, "ops:x:999:\n").unwrap();
        let set = |text: &str| {
            // Replaced as the shadow tools do: a new file, renamed over.
            for path in [&files.subuid.path, &files.subgid.path] {
                let tmp = path.with_extension("new");
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, path).unwrap();
            }
        };
        set("ops:200000:131072\n");
        let ranges = crate::idmap::read_remap_ranges(&files, "ops", 65536).unwrap().unwrap();
        let mut store = DiskStore::new(dir.path().join("state"), ranges, Isolation::default(), 65536).following(
            files.clone(),
            "ops",
            AccountStamps::of(&files),
        );
        let name = |n: &str| WorkloadName::try_from(n).unwrap();
        let (a, b, c) = (name("a"), name("b"), name("c"));
        let uid = |store: &mut DiskStore, n: &WorkloadName| store.slices(&[n])[n].as_ref().unwrap().uid.start;
        assert_eq!(uid(&mut store, &a), 200000);
        // The range cut down and another given to someone else: a new
        // workload's slice is in what is left, and one outside moves in.
        set("ops:265536:65536\nbob:200000:65536\n");
        assert_eq!(uid(&mut store, &b), 265536);
        assert_eq!(store.slice_counts().1, 1);
        store.forget(&b, true).unwrap();
        assert_eq!(uid(&mut store, &a), 265536, "a's slice is bob's now: a moves");
        // A bad edit: the ranges read last stay.
        set("ops:265536\n");
        assert!(store.slices(&[&c])[&c].is_err(), "the one slice is a's");
        assert_eq!(uid(&mut store, &a), 265536);
        // An edit between the look at the files and the read of the ranges
        // (the daemon's start) is seen at the first slice given.
        set("ops:265536:65536\n");
        let seen = AccountStamps::of(&files);
        let ranges = crate::idmap::read_remap_ranges(&files, "ops", 65536).unwrap().unwrap();
        set("ops:400000:65536\n");
        let mut store = DiskStore::new(dir.path().join("state2"), ranges, Isolation::default(), 65536)
            .following(files, "ops", seen);
        assert_eq!(uid(&mut store, &c), 400000);
    }
}
