//! The real supervisor (the shell around the core) driven by fakes: a
//! scripted executor and an in-memory store, no root, no kernel. The
//! convergence property runs here, through the supervisor itself.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use paddock::daemon::executor::{Executor, SandboxEvent, StartRequest};
use paddock::daemon::kept::Kept;
use paddock::daemon::scan::{FileChange, Found, Outcome, Snapshot};
use paddock::daemon::store::Store;
use paddock::daemon::supervisor::Supervisor;
use paddock::idmap::{IdRange, Slice};
use paddock::model::{Exit, Manifest, Signal, WorkloadName};
use paddock::reconcile::{Blame, Clock, Command, Desired, ManifestEvent, StartFailure, Version};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Start(String),
    Signal(String),
    Kill(String),
}

#[derive(Default, Clone)]
struct Fake {
    calls: Rc<RefCell<Vec<Call>>>,
    /// The next starts fail at once, with this blame.
    fail: Rc<RefCell<Option<Blame>>>,
    /// The store's durable writes (`Memory::durable`), as the executor sees them.
    durable: Rc<RefCell<Vec<(WorkloadName, Kept)>>>,
    /// Each record rewritten (`Executor::reworded`): the workload, the
    /// version it now names, and the hold on disk by then.
    reworded: Rc<RefCell<Vec<Reworded>>>,
}

/// A record rewritten: the workload, the version it names now, the hold on disk then.
type Reworded = (String, Version, Option<Version>);

impl Executor for Fake {
    fn start(&mut self, request: StartRequest<'_>) -> Result<(), StartFailure> {
        if let Some(blame) = *self.fail.borrow() {
            return Err(StartFailure::new(blame, std::io::Error::other("scripted failure")));
        }
        self.calls.borrow_mut().push(Call::Start(request.name.to_string()));
        Ok(())
    }
    fn signal(&mut self, name: &WorkloadName, _: Signal) {
        self.calls.borrow_mut().push(Call::Signal(name.to_string()));
    }
    fn kill(&mut self, name: &WorkloadName) {
        self.calls.borrow_mut().push(Call::Kill(name.to_string()));
    }
    fn reap(&mut self, _: &WorkloadName) {}
    fn reworded(&mut self, name: &WorkloadName, _: Version, desired: &Desired) {
        let on_disk = self.durable.borrow().iter().rev().find(|(n, _)| n == name).and_then(|(_, k)| k.hold);
        self.reworded.borrow_mut().push((name.to_string(), desired.version, on_disk));
    }
}

#[derive(Default, Clone)]
struct Memory {
    slices: Rc<RefCell<BTreeMap<WorkloadName, Slice>>>,
    kept: Rc<RefCell<BTreeMap<WorkloadName, Kept>>>,
    /// What was written durably (`keep_now`), in order.
    durable: Rc<RefCell<Vec<(WorkloadName, Kept)>>>,
    /// How many batches were written durably at once (`keep_all_soon`).
    batches: Rc<RefCell<usize>>,
}

impl Store for Memory {
    fn slices(&mut self, names: &[&WorkloadName]) -> BTreeMap<WorkloadName, Result<Slice, StartFailure>> {
        let mut slices = self.slices.borrow_mut();
        names
            .iter()
            .map(|n| {
                let next = slices.len() as u32;
                let slice = *slices.entry((*n).clone()).or_insert_with(|| {
                    let range = IdRange { start: 100_000 + next * 65536, count: 65536 };
                    Slice { uid: range, gid: range }
                });
                ((*n).clone(), Ok(slice))
            })
            .collect()
    }
    fn slice(&self, name: &WorkloadName) -> Option<Slice> {
        self.slices.borrow().get(name).copied()
    }
    fn keep(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        self.kept.borrow_mut().insert(name.clone(), kept.clone());
        Ok(())
    }
    fn keep_now(&mut self, name: &WorkloadName, kept: &Kept) -> std::io::Result<()> {
        self.durable.borrow_mut().push((name.clone(), kept.clone()));
        self.keep(name, kept)
    }
    fn keep_all_soon(&mut self, all: &[(WorkloadName, Kept)]) -> Vec<std::io::Result<()>> {
        *self.batches.borrow_mut() += 1;
        all.iter().map(|(name, kept)| self.keep_now(name, kept)).collect()
    }
    fn forget(&mut self, name: &WorkloadName, free_slice: bool) -> std::io::Result<()> {
        if free_slice {
            self.slices.borrow_mut().remove(name);
        }
        self.kept.borrow_mut().remove(name);
        Ok(())
    }
    fn slice_counts(&self) -> (usize, usize) {
        (self.slices.borrow().len(), 256)
    }
}

fn n(s: &str) -> WorkloadName {
    WorkloadName::try_from(s).unwrap()
}

fn manifest(arg: u64) -> Arc<Manifest> {
    Arc::new(toml::from_str(&format!("command = [\"/bin/sleep\", \"{arg}\"]\n")).unwrap())
}

/// A rescan that found these files changed.
fn scan(changes: Vec<(&str, ManifestEvent)>) -> Outcome {
    Outcome {
        snapshot: Snapshot::new(),
        changes: changes
            .into_iter()
            .map(|(name, event)| FileChange {
                file: format!("{name}.toml"),
                name: Some(n(name)),
                event,
                warnings: None,
            })
            .collect(),
        refused: None,
        kept: Vec::new(),
        withheld: Default::default(),
        adopted_runs: Vec::new(),
        gone: Default::default(),
        not_read: Default::default(),
        unread: Default::default(),
        again: None,
    }
}

fn valid(version: u64) -> ManifestEvent {
    ManifestEvent::Valid(Desired { version: Version(version), manifest: manifest(version), source: Arc::from("") })
}

struct Rig {
    sup: Supervisor<Fake, Memory>,
    fake: Fake,
    store: Memory,
    at: Clock,
}

impl Rig {
    fn new() -> Self {
        let store = Memory::default();
        let fake = Fake { durable: store.durable.clone(), ..Fake::default() };
        let sup = Supervisor::new(fake.clone(), store.clone(), PathBuf::from("/wl"), PathBuf::from("/state"), 7);
        Rig { sup, fake, store, at: Clock::read() }
    }

    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.fake.calls.borrow_mut())
    }

    /// The world answers what the supervisor did: every start comes up,
    /// every stop or kill ends in an exit.
    fn answer(&mut self, calls: &[Call]) {
        for call in calls {
            let event = match call {
                Call::Start(name) => SandboxEvent::Started { name: n(name), pid: 1, latency: Duration::ZERO },
                Call::Signal(name) | Call::Kill(name) => {
                    SandboxEvent::Exited { name: n(name), exit: Exit::Signal(15), ended: None }
                }
            };
            self.sup.on_sandbox(event, self.at);
        }
    }

    /// `web`, version 1, started and running.
    fn web_running(&mut self) {
        self.sup.apply(scan(vec![("web", valid(1))]), self.at);
        self.sup.reconcile(self.at);
        let calls = self.take_calls();
        self.answer(&calls);
    }
}

#[test]
fn a_start_that_fails_at_once_waits_and_is_retried_by_a_later_pass() {
    let mut r = Rig::new();
    *r.fake.fail.borrow_mut() = Some(Blame::Daemon);
    r.sup.apply(scan(vec![("web", valid(1))]), r.at);
    r.sup.reconcile(r.at);
    assert!(r.take_calls().is_empty());
    assert_eq!(r.sup.status(r.at)[0].state, "backoff");
    assert!(r.sup.status(r.at)[0].error.as_deref().unwrap().contains("scripted failure"));
    *r.fake.fail.borrow_mut() = None;
    r.at = r.at.after(Duration::from_secs(3));
    r.sup.on_timer(r.at);
    r.sup.reconcile(r.at);
    assert_eq!(r.take_calls(), [Call::Start("web".into())]);
}

#[test]
fn a_hold_ends_with_its_manifest_even_when_the_exit_comes_after_the_removal() {
    let mut r = Rig::new();
    r.web_running();
    r.sup.request("web", Command::Stop, r.at).unwrap();
    assert_eq!(r.store.kept.borrow()[&n("web")].hold, Some(Version(1)));
    // On disk before the stop signal went: a daemon that dies meanwhile leaves it held.
    let durable: Vec<_> = r.store.durable.borrow().iter().map(|(n, k)| (n.to_string(), k.hold)).collect();
    assert_eq!(durable, [("web".to_owned(), Some(Version(1)))]);
    let stop = r.take_calls();
    assert_eq!(stop, [Call::Signal("web".into())]);
    r.sup.apply(scan(vec![("web", ManifestEvent::Removed)]), r.at);
    r.answer(&stop);
    r.sup.reconcile(r.at);
    assert!(r.store.kept.borrow().get(&n("web")).is_none(), "nothing is kept of a removed workload");
    assert!(r.store.slices.borrow().get(&n("web")).is_none(), "its slice is free");
    assert!(r.sup.status(r.at).is_empty());
}

/// A file reworded (comments) while a `paddock stop` is under way: the
/// hold, now of the file's new version, is on disk before the sandbox's
/// record names that version. Written the other way round, a daemon that
/// died between the two writes left a record and a file of one version
/// and a hold of another, which its successor released: the operator's
/// stop undone, the workload left running.
#[test]
fn a_reworded_hold_is_on_disk_before_the_sandboxs_record_names_the_new_version() {
    let mut r = Rig::new();
    r.web_running();
    r.sup.request("web", Command::Stop, r.at).unwrap();
    assert_eq!(r.take_calls(), [Call::Signal("web".into())]);
    // Version 2: version 1's manifest, in other words.
    let reworded = Desired { version: Version(2), manifest: manifest(1), source: Arc::from("# the same\n") };
    r.sup.apply(scan(vec![("web", ManifestEvent::Valid(reworded))]), r.at);
    assert!(r.take_calls().is_empty(), "nothing restarted");
    assert_eq!(*r.fake.reworded.borrow(), [("web".to_owned(), Version(2), Some(Version(2)))]);
}

/// Many files reworded at once (a configuration tool that stamps each
/// with the time it ran): what is kept of them is written in one durable
/// batch, not one wait on the disk for each, before their records are.
#[test]
fn files_reworded_together_are_kept_in_one_batch() {
    let mut r = Rig::new();
    let names = ["a", "b", "c"];
    r.sup.apply(scan(names.iter().map(|n| (*n, valid(1))).collect()), r.at);
    r.sup.reconcile(r.at);
    let calls = r.take_calls();
    r.answer(&calls);
    let batches = *r.store.batches.borrow();
    let reworded =
        |n| (n, ManifestEvent::Valid(Desired { version: Version(2), manifest: manifest(1), source: Arc::from("#") }));
    r.sup.apply(scan(names.iter().map(|n| reworded(*n)).collect()), r.at);
    assert!(r.take_calls().is_empty(), "nothing restarted");
    let rewritten: Vec<String> = r.fake.reworded.borrow().iter().map(|(n, ..)| n.clone()).collect();
    assert_eq!(rewritten, names);
    assert_eq!(*r.store.batches.borrow() - batches, 1, "one durable batch");
}

#[test]
fn requests_answer_in_words() {
    let mut r = Rig::new();
    r.sup.apply(scan(vec![("web", valid(1))]), r.at);
    assert_eq!(
        r.sup.request("web", Command::Stop, r.at).unwrap(),
        "web is held stopped until `paddock start web` or a change to its manifest"
    );
    assert_eq!(r.sup.request("web", Command::Stop, r.at).unwrap(), "web is already held stopped");
    assert!(r.sup.request("nope", Command::Start, r.at).unwrap_err().contains("no workload \"nope\""));
}

#[derive(Debug, Clone)]
enum Op {
    Write(u8, u64),
    Remove(u8),
    Crash(u8),
    Stop(u8),
    Start(u8),
    /// Its file rewritten in other words: a new version, the same manifest.
    Reword(u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            (0u8..5, 1u64..4).prop_map(|(i, v)| Op::Write(i, v)),
            (0u8..5).prop_map(Op::Remove),
            (0u8..5).prop_map(Op::Crash),
            (0u8..5).prop_map(Op::Stop),
            (0u8..5).prop_map(Op::Start),
            (0u8..5).prop_map(Op::Reword),
        ],
        1..40,
    )
}

proptest! {
    /// Whatever happens, the supervisor settles with exactly the workloads
    /// that should run running, never two sandboxes of one workload, and
    /// a workload whose manifest did not change never restarted by a
    /// change to another's.
    #[test]
    fn the_supervisor_converges_through_its_executor(ops in ops()) {
        let mut r = Rig::new();
        let mut files: BTreeMap<String, u64> = BTreeMap::new();
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut running: BTreeSet<String> = BTreeSet::new();
        let mut rewordings = 1000;
        for op in ops {
            // A reword touches nothing: no start, no stop, of it either.
            let mut reworded = false;
            let touched = match &op {
                Op::Write(i, v) => {
                    let w = format!("w{i}");
                    if files.insert(w.clone(), *v) != Some(*v) {
                        held.remove(&w);
                        r.sup.apply(scan(vec![(w.as_str(), valid(*v))]), r.at);
                    }
                    Some(w)
                }
                Op::Remove(i) => {
                    let w = format!("w{i}");
                    if files.remove(&w).is_some() {
                        held.remove(&w);
                        r.sup.apply(scan(vec![(w.as_str(), ManifestEvent::Removed)]), r.at);
                    }
                    Some(w)
                }
                Op::Crash(i) => {
                    let w = format!("w{i}");
                    if running.contains(&w) {
                        r.sup.on_sandbox(SandboxEvent::Exited { name: n(&w), exit: Exit::Code(1), ended: None }, r.at);
                        running.remove(&w);
                    }
                    Some(w)
                }
                Op::Stop(i) => {
                    let w = format!("w{i}");
                    if r.sup.request(&w, Command::Stop, r.at).is_ok() { held.insert(w.clone()); }
                    Some(w)
                }
                Op::Start(i) => {
                    let w = format!("w{i}");
                    if r.sup.request(&w, Command::Start, r.at).is_ok() { held.remove(&w); }
                    Some(w)
                }
                Op::Reword(i) => {
                    let w = format!("w{i}");
                    if let Some(v) = files.get(&w) {
                        rewordings += 1;
                        let desired = Desired { version: Version(rewordings), manifest: manifest(*v), source: Arc::from("") };
                        r.sup.apply(scan(vec![(w.as_str(), ManifestEvent::Valid(desired))]), r.at);
                        reworded = true;
                    }
                    Some(w)
                }
            };
            // Settle: reconcile, let the world answer, until quiet. Only
            // the workload this op touched may start or stop right away;
            // others only when a restart delay of theirs runs out.
            let mut waited = false;
            for _ in 0..40 {
                r.sup.reconcile(r.at);
                let calls = r.take_calls();
                for call in &calls {
                    let w = match call { Call::Start(w) | Call::Signal(w) | Call::Kill(w) => w };
                    prop_assert!(waited || Some(w) == touched.as_ref(), "{call:?} touched an unchanged workload");
                    prop_assert!(waited || !reworded, "{call:?} after a reword");
                    match call {
                        Call::Start(w) => {
                            prop_assert!(!running.contains(w), "a second sandbox of {w}");
                            running.insert(w.clone());
                        }
                        Call::Signal(w) | Call::Kill(w) => { running.remove(w); }
                    }
                }
                r.answer(&calls);
                if calls.is_empty() {
                    // Crashes restart after their delay.
                    let Some(wake) = r.sup.wake_at() else { break };
                    r.at = r.at.after(wake.saturating_duration_since(r.at.now));
                    r.sup.on_timer(r.at);
                    waited = true;
                }
            }
        }
        let want: BTreeSet<String> = files.keys().filter(|w| !held.contains(*w)).cloned().collect();
        prop_assert_eq!(&running, &want, "what runs is what should");
        for w in r.sup.status(r.at) {
            let expected = if want.contains(&w.name) { "running" } else { "stopped" };
            prop_assert_eq!(w.state.as_str(), expected, "{}", w.name);
        }
    }
}

#[test]
fn a_shutdown_lists_what_it_is_stopping_before_what_waits_its_turn() {
    let mut r = Rig::new();
    // "b" starts after "a", so it stops first and "a" waits for it.
    let b = Arc::new(toml::from_str("command = [\"/bin/sleep\", \"1\"]\nafter = [\"a\"]\n").unwrap());
    r.sup.apply(
        scan(vec![
            ("a", valid(1)),
            ("b", ManifestEvent::Valid(Desired { version: Version(1), manifest: b, source: Arc::from("") })),
        ]),
        r.at,
    );
    for _ in 0..2 {
        r.sup.reconcile(r.at);
        let calls = r.take_calls();
        r.answer(&calls);
    }
    assert!(r.sup.status(r.at).iter().all(|w| w.state == "running"), "{:?}", r.sup.status(r.at));
    r.sup.shutdown(r.at);
    let left = r.sup.left_to_stop(r.at.now);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].starts_with("b: SIGTERM"), "{left:?}");
    assert_eq!(left[1], "a: after what comes after it");
}

/// Adopted sandboxes kept on their recorded manifests by a first scan that
/// was refused: the first scan taken stops the one whose file is gone,
/// and leaves the one whose file is there.
#[test]
fn a_kept_sandbox_whose_file_is_gone_by_the_first_scan_taken_is_stopped() {
    let mut r = Rig::new();
    let desired = |v| Desired { version: Version(v), manifest: manifest(v), source: Arc::from("") };
    for (name, v) in [("here", 1), ("gone", 2)] {
        r.sup.adopt(&n(name), Version(v), 100 + v as i32, r.at.now, r.at);
    }
    let refused = Outcome {
        kept: vec![(n("here"), desired(1)), (n("gone"), desired(2))],
        ..Outcome::refused(Snapshot::new(), "unsafe".into())
    };
    r.sup.apply(refused, r.at);
    r.sup.reconcile(r.at);
    assert!(r.take_calls().is_empty(), "both run on while the directory is refused");
    let taken = |withheld: &[&str]| {
        let mut taken = scan(Vec::new());
        let text: Arc<str> = Arc::from("");
        taken.snapshot.insert("here.toml".into(), Found::Read { text, version: Version(1), stamp: None });
        taken.withheld = withheld.iter().map(|f| f.to_string()).collect();
        taken
    };
    // Its file being written (so taken as it was: not at all): not yet.
    r.sup.apply(taken(&["gone.toml"]), r.at);
    r.sup.reconcile(r.at);
    assert!(r.take_calls().is_empty(), "a file being written is not a file gone");
    r.sup.apply(taken(&[]), r.at);
    r.sup.reconcile(r.at);
    assert_eq!(r.take_calls(), [Call::Signal("gone".into())]);
}

/// What a predecessor kept (here a hold) is not forgotten by a first scan
/// that was refused (the directory unreadable for a moment, out of
/// descriptors): only a scan that read the directory says a workload has
/// no file.
#[test]
fn kept_state_outlives_a_refused_first_scan_and_goes_with_one_that_read() {
    let mut r = Rig::new();
    let held = Kept { hold: Some(Version(1)), ..Kept::default() };
    r.store.kept.borrow_mut().insert(n("held"), held.clone());
    let mut loaded = paddock::daemon::kept::Loaded::default();
    loaded.kept.insert(n("held"), held);
    r.sup.restore(loaded, Vec::new());
    r.sup.apply(Outcome::refused(Snapshot::new(), "Too many open files (os error 24)".into()), r.at);
    r.sup.reconcile(r.at);
    assert!(r.store.kept.borrow().contains_key(&n("held")), "the hold was forgotten");
    r.sup.apply(scan(Vec::new()), r.at);
    r.sup.reconcile(r.at);
    assert!(!r.store.kept.borrow().contains_key(&n("held")), "no file: forgotten");
    assert!(r.take_calls().is_empty());
}

/// An adopted sandbox whose record has no manifest text (an older
/// paddock's) is not stopped as removed by a first scan that was refused:
/// only one that read the directory says its file is gone.
#[test]
fn an_adopted_sandbox_outlives_a_refused_first_scan_and_goes_with_one_that_read() {
    let mut r = Rig::new();
    r.sup.restore(paddock::daemon::kept::Loaded::default(), Vec::new());
    r.sup.adopt(&n("old"), Version(1), 101, r.at.now, r.at);
    r.sup.apply(Outcome::refused(Snapshot::new(), "Too many open files (os error 24)".into()), r.at);
    r.sup.reconcile(r.at);
    assert!(r.take_calls().is_empty(), "stopped while the directory could not be read");
    r.sup.apply(scan(Vec::new()), r.at);
    r.sup.reconcile(r.at);
    assert_eq!(r.take_calls(), [Call::Signal("old".into())]);
}

/// A reload's answer says what the directory holds that is not applied:
/// files that are not manifests, files unread for want of descriptors
/// (each taken as it was), a listing that failed so, and a directory
/// refused as unsafe. (It said "nothing changed".)
#[test]
fn a_reloads_answer_says_what_was_not_read_and_why() {
    let mut r = Rig::new();
    let mut outcome = scan(vec![("web", valid(1))]);
    outcome.not_read.insert("web.yaml".into());
    outcome.unread.insert(
        "api.toml".into(),
        "cannot be read for now (Too many open files (os error 24)): read again in a moment".into(),
    );
    r.sup.apply(outcome, r.at);
    assert_eq!(
        r.sup.warnings_now(),
        [
            "/wl/web.yaml: not read: only NAME.toml files are workloads (rename it NAME.toml to run it, or move it out of the directory)",
            "/wl/api.toml: cannot be read for now (Too many open files (os error 24)): read again in a moment",
        ]
    );
    assert_eq!(r.sup.refused_now(), None);

    let unlisted = "cannot scan /wl: Too many open files (os error 24)";
    let mut outcome = Outcome::refused(Snapshot::new(), unlisted.into());
    outcome.again = Some(paddock::daemon::scan::Rescan::Everything);
    r.sup.apply(outcome, r.at);
    assert_eq!(r.sup.refused_now(), None, "not unsafe: read again in a moment");
    assert!(
        r.sup
            .warnings_now()
            .contains(&format!("{unlisted}: what was read before stands, and it is read again in a moment")),
        "{:?}",
        r.sup.warnings_now()
    );

    let unsafe_dir = "/wl is writable by others";
    r.sup.apply(Outcome::refused(Snapshot::new(), unsafe_dir.into()), r.at);
    assert_eq!(r.sup.refused_now().as_deref(), Some(unsafe_dir));

    r.sup.apply(scan(Vec::new()), r.at);
    assert_eq!((r.sup.refused_now(), r.sup.warnings_now()), (None, Vec::<String>::new()), "read again: all well");
}

/// A directory that cannot be watched is said where the operator looks
/// when changes seem not to apply: `status` (its notes), a reload's
/// answer and systemd's STATUS=.
#[test]
fn a_workloads_directory_not_watched_is_said_in_status_reload_and_status_line() {
    let mut r = Rig::new();
    r.sup.apply(scan(vec![("web", valid(1))]), r.at);
    assert!(!r.sup.notes().iter().any(|n| n.contains("not watched")));
    r.sup.unwatched = true;
    let said = "the workloads directory /wl is not watched (root's inotify instances or watches may be used up: \
                raise fs.inotify.max_user_instances or max_user_watches; the log says why): its changes are seen at each resync \
                (`resync_interval`), SIGHUP or `paddock reload`";
    assert_eq!(r.sup.notes(), [said]);
    assert_eq!(r.sup.warnings_now(), [said]);
    assert!(r.sup.summary().ends_with("; the workloads directory is not watched: changes apply at each resync"));
    r.sup.unwatched = false;
    assert!(r.sup.notes().is_empty() && r.sup.warnings_now().is_empty());
}

/// The names whose logs stay are the workloads the daemon knows: one
/// removed and forgotten is no longer among them (its logs go a day on).
#[test]
fn a_forgotten_workload_no_longer_owns_its_logs() {
    let mut r = Rig::new();
    r.sup.apply(scan(vec![("web", valid(1)), ("api", valid(1))]), r.at);
    r.sup.reconcile(r.at);
    let calls = r.take_calls();
    r.answer(&calls);
    assert_eq!(r.sup.log_owners().into_iter().collect::<Vec<_>>(), ["api", "web"]);
    r.sup.apply(scan(vec![("api", ManifestEvent::Removed)]), r.at);
    r.sup.reconcile(r.at);
    let calls = r.take_calls();
    r.answer(&calls);
    r.sup.reconcile(r.at);
    assert_eq!(r.sup.log_owners().into_iter().collect::<Vec<_>>(), ["web"]);
}
