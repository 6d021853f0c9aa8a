//! The supervisor's pure core, as a table: each row a story of events for
//! one workload and the state and effects it must end in. No root, no
//! kernel, no clock (time is passed in).

use std::sync::Arc;
use std::time::Duration;

use paddock::model::{Exit, Manifest, Signal, WorkloadName};
use paddock::reconcile::{
    Answer, Blame, Cause, Clock, Command, Core, Counts, Desired, Effect, Ended, HealthStatus, KeptHealth,
    ManifestEvent, Replacing, START_TIMEOUT, StartFailure, State, Version,
};

fn name() -> WorkloadName {
    WorkloadName::try_from("web").unwrap()
}

fn manifest(extra: &str) -> Arc<Manifest> {
    Arc::new(toml::from_str(&format!("command = [\"/bin/sleep\", \"1\"]\n{extra}")).unwrap())
}

/// A valid manifest of version `v`, with `extra` TOML.
fn valid(v: u64, extra: &str) -> ManifestEvent {
    ManifestEvent::Valid(Desired { version: Version(v), manifest: manifest(extra), source: Arc::from("") })
}

/// One step of a story.
#[derive(Debug, Clone)]
enum Step {
    /// A valid manifest of this version (and extra TOML).
    Valid(u64, &'static str),
    Invalid,
    Removed,
    Reconcile,
    Started,
    Exit(i32),
    StartFailed(Blame),
    Ask(Command),
    /// Time passes, then the timer fires.
    Wait(Duration),
    /// A daemon restart: the core is rebuilt from what was kept.
    Restart,
    /// The daemon's own stop (SIGTERM): every sandbox is stopped.
    Shutdown,
    /// A health probe's result for the run (pid 4242).
    Probe(bool),
}

use Step::*;

struct Story {
    core: Core,
    at: Clock,
    /// The effects of the last step, by kind.
    effects: Vec<String>,
    /// The counts as the last `Persist` wrote them (what a daemon's
    /// successor finds on disk).
    kept_counts: Option<Counts>,
}

fn kind(e: &Effect) -> String {
    match e {
        Effect::Start { cause, .. } => format!("start ({cause})"),
        Effect::Stop { cause, .. } => format!("stop ({cause})"),
        Effect::Kill { .. } => "kill".into(),
        Effect::Persist { .. } => "persist".into(),
        Effect::Reworded { .. } => "reworded".into(),
        Effect::Forget { .. } => "forget".into(),
        Effect::Probe { probe, .. } => format!("probe ({probe})"),
    }
}

impl Story {
    fn new() -> Self {
        Story { core: Core::default(), at: Clock::read(), effects: Vec::new(), kept_counts: None }
    }

    fn step(&mut self, step: &Step) {
        let n = name();
        let effects = match step {
            Valid(v, extra) => {
                let event = valid(*v, extra);
                self.core.on_manifest(&n, event, self.at)
            }
            Invalid => self.core.on_manifest(&n, ManifestEvent::Invalid("bad".into()), self.at),
            Removed => self.core.on_manifest(&n, ManifestEvent::Removed, self.at),
            Reconcile => self.core.reconcile(self.at, 16).effects,
            Started => {
                self.core.on_started(&n, 4242, Duration::from_millis(3), self.at);
                Vec::new()
            }
            Exit(code) => self.core.on_exit(&n, Exit::Code(*code), self.at, 0.0),
            StartFailed(blame) => {
                let failure = StartFailure::new(*blame, std::io::Error::other("no"));
                self.core.on_start_failed(&n, failure, self.at, 0.0)
            }
            Ask(command) => self.core.on_request(&n, *command, self.at).map(|(_, e)| e).unwrap_or_default(),
            Wait(d) => {
                self.at = self.at.after(*d);
                self.core.on_timer(self.at)
            }
            Probe(ok) => self.core.on_probe(&n, 4242, *ok, String::new(), self.at),
            Shutdown => self.core.shutdown(self.at),
            Restart => {
                // What the shell keeps of it, and nothing else.
                let kept = self.core.get(&n).map(|w| (w.hold, w.ended, w.replacing, w.exit_kept(), w.reads_kept()));
                self.core = Core::default();
                if let Some((hold, ended, replacing, last_exit, reads)) = kept {
                    self.core.restore(&n, hold, ended, self.kept_counts, last_exit);
                    self.core.restore_reads(&n, reads);
                    if let Some(replacing) = replacing {
                        self.core.restore_replacing(&n, replacing);
                    }
                }
                Vec::new()
            }
        };
        if effects.iter().any(|e| matches!(e, Effect::Persist { .. })) {
            self.kept_counts = self.core.get(&n).and_then(|w| w.counts());
        }
        self.effects = effects.iter().map(kind).collect();
    }

    fn state(&self) -> String {
        self.core.get(&name()).map_or("gone".into(), |w| {
            let held = if w.hold.is_some() { " held" } else { "" };
            let health = match (&w.health, w.state) {
                (Some(h), State::Running { .. }) => format!(" {}", h.status.name()),
                _ => String::new(),
            };
            format!("{}{held}{health}", w.state_name())
        })
    }
}

const SEC: Duration = Duration::from_secs(1);
const TCP: &str = "[health]\ntcp = 80\ninterval = \"1s\"";
const NEVER: &str = "[health]\ntcp = 80\n[restart]\npolicy = \"never\"";
const MARK: &str = "[health]\ntcp = 80\non_unhealthy = \"mark\"";
const SLOW: &str = "[health]\ntcp = 80\nstart_period = \"30s\"";

#[test]
fn every_story_ends_where_it_should() {
    #[rustfmt::skip]
    let rows: Vec<(&str, Vec<Step>, &str, Vec<&str>)> = vec![
        // (story, steps, final state, effects of the last step)
        ("a new manifest starts", vec![Valid(1, ""), Reconcile], "starting", vec!["start (manifest added)"]),
        ("it runs once its init reports", vec![Valid(1, ""), Reconcile, Started], "running", vec![]),
        ("a failure waits, then retries", vec![Valid(1, ""), Reconcile, Started, Exit(1)], "backoff", vec!["persist"]),
        ("the retry after the delay", vec![Valid(1, ""), Reconcile, Started, Exit(1), Wait(SEC), Reconcile], "starting", vec!["start (its restart delay is over)", "persist"]),
        ("a changed manifest stops the old run", vec![Valid(1, ""), Reconcile, Started, Valid(2, "hostname = \"h\""), Reconcile], "stopping", vec!["stop (manifest changed: hostname)"]),
        ("and starts the new one after", vec![Valid(1, ""), Reconcile, Started, Valid(2, "hostname = \"h\""), Reconcile, Exit(143), Reconcile], "starting", vec!["start (manifest changed: hostname)"]),
        // Another version of the file that reads as the same manifest (comments, formatting).
        ("an edit that reads the same restarts nothing", vec![Valid(1, ""), Reconcile, Started, Valid(2, "")], "running", vec!["reworded", "persist"]),
        ("nor does a pass after it", vec![Valid(1, ""), Reconcile, Started, Valid(2, ""), Reconcile], "running", vec![]),
        // The hostname's default (the workload's name) written out.
        ("so does a default written out", vec![Valid(1, ""), Reconcile, Started, Valid(2, "hostname = \"web\"")], "running", vec!["reworded", "persist"]),
        ("a restart delay goes on", vec![Valid(1, ""), Reconcile, Started, Exit(1), Valid(2, ""), Reconcile], "backoff", vec![]),
        ("and ends as it would have", vec![Valid(1, ""), Reconcile, Started, Exit(1), Valid(2, ""), Wait(SEC), Reconcile], "starting", vec!["start (its restart delay is over)", "persist"]),
        ("an invalid edit keeps the old run", vec![Valid(1, ""), Reconcile, Started, Invalid, Reconcile], "running", vec![]),
        ("a never-valid file runs nothing", vec![Invalid, Reconcile], "invalid", vec![]),
        ("a removed manifest stops its run", vec![Valid(1, ""), Reconcile, Started, Removed, Reconcile], "stopping", vec!["stop (manifest removed)"]),
        ("and is forgotten once it exited", vec![Valid(1, ""), Reconcile, Started, Removed, Reconcile, Exit(143)], "gone", vec!["forget"]),
        ("stop holds a running workload", vec![Valid(1, ""), Reconcile, Started, Ask(Command::Stop)], "stopping held", vec!["persist", "stop (paddock stop)"]),
        ("its exit kept for status across a daemon restart", vec![Valid(1, ""), Reconcile, Started, Ask(Command::Stop), Exit(143)], "stopped held", vec!["persist"]),
        ("which stays stopped after its exit", vec![Valid(1, ""), Reconcile, Started, Ask(Command::Stop), Exit(143), Reconcile], "stopped held", vec![]),
        ("and across a daemon restart", vec![Valid(1, ""), Reconcile, Started, Ask(Command::Stop), Exit(143), Restart, Valid(1, ""), Reconcile], "stopped held", vec![]),
        ("a new manifest version releases the hold", vec![Valid(1, ""), Ask(Command::Stop), Valid(2, "hostname = \"h\""), Reconcile], "starting", vec!["start (manifest changed: hostname)"]),
        ("one that reads the same does not", vec![Valid(1, ""), Ask(Command::Stop), Valid(2, ""), Reconcile], "stopped held", vec![]),
        ("across a daemon restart either", vec![Valid(1, ""), Ask(Command::Stop), Valid(2, ""), Restart, Valid(2, ""), Reconcile], "stopped held", vec![]),
        // The next daemon never read the text it was held at: what it reads as was kept with the hold.
        ("nor one made while no daemon ran", vec![Valid(1, ""), Ask(Command::Stop), Restart, Valid(2, ""), Reconcile], "stopped held", vec![]),
        ("nor one after an invalid edit and a daemon restart", vec![Valid(1, ""), Ask(Command::Stop), Invalid, Restart, Invalid, Valid(2, ""), Reconcile], "stopped held", vec![]),
        ("but a change after them does", vec![Valid(1, ""), Ask(Command::Stop), Invalid, Restart, Invalid, Valid(2, "hostname = \"h\""), Reconcile], "starting", vec!["start (manifest added)"]),
        ("start releases it", vec![Valid(1, ""), Ask(Command::Stop), Ask(Command::Start), Reconcile], "starting", vec!["start (paddock start)"]),
        // The bug the old supervisor had: stop, then remove before the exit lands.
        ("held, removed before its exit: forgotten", vec![Valid(1, ""), Reconcile, Started, Ask(Command::Stop), Removed, Exit(143)], "gone", vec!["forget"]),
        ("and the same manifest added again starts", vec![Valid(1, ""), Reconcile, Started, Ask(Command::Stop), Removed, Exit(143), Restart, Valid(1, ""), Reconcile], "starting", vec!["start (manifest added)"]),
        ("a one-shot that finished is not run again", vec![Valid(1, "[restart]\npolicy = \"never\""), Reconcile, Started, Exit(0), Restart, Valid(1, "[restart]\npolicy = \"never\""), Reconcile], "exited", vec![]),
        ("until its manifest changes", vec![Valid(1, "[restart]\npolicy = \"never\""), Reconcile, Started, Exit(0), Restart, Valid(2, "hostname = \"h\"\n[restart]\npolicy = \"never\""), Reconcile], "starting", vec!["start (manifest added)"]),
        ("an edit that reads the same does not run it again", vec![Valid(1, "[restart]\npolicy = \"never\""), Reconcile, Started, Exit(0), Valid(2, "[restart]\npolicy = \"never\""), Reconcile], "exited", vec![]),
        ("nor after a daemon restart", vec![Valid(1, "[restart]\npolicy = \"never\""), Reconcile, Started, Exit(0), Valid(2, "[restart]\npolicy = \"never\""), Restart, Valid(2, "[restart]\npolicy = \"never\""), Reconcile], "exited", vec![]),
        ("nor one made after an invalid edit and a daemon restart", vec![Valid(1, "[restart]\npolicy = \"never\""), Reconcile, Started, Exit(0), Invalid, Restart, Invalid, Valid(2, "[restart]\npolicy = \"never\""), Reconcile], "exited", vec![]),
        ("nor one made while no daemon ran", vec![Valid(1, "[restart]\npolicy = \"never\""), Reconcile, Started, Exit(0), Restart, Valid(2, "[restart]\npolicy = \"never\""), Reconcile], "exited", vec![]),
        ("one that gave up stays failed across a restart", vec![Valid(1, "[restart]\nmax_retries = 1"), Reconcile, Started, Exit(1), Wait(SEC), Reconcile, Started, Exit(1), Restart, Valid(1, "[restart]\nmax_retries = 1"), Reconcile], "failed", vec![]),
        ("restart revives a failed one", vec![Valid(1, "[restart]\nmax_retries = 1"), Reconcile, Started, Exit(1), Wait(SEC), Reconcile, Started, Exit(1), Ask(Command::Restart), Reconcile], "starting", vec!["start (paddock restart)"]),
        ("a stop that times out is a kill", vec![Valid(1, ""), Reconcile, Started, Removed, Reconcile, Wait(Duration::from_secs(11))], "stopping", vec!["kill"]),
        ("a start whose init never reports is killed", vec![Valid(1, ""), Reconcile, Wait(START_TIMEOUT + SEC)], "starting", vec!["kill"]),
        ("and counts as a failure when it dies", vec![Valid(1, ""), Reconcile, Wait(START_TIMEOUT + SEC), StartFailed(Blame::Workload)], "backoff", vec!["persist"]),
        ("the daemon's trouble is retried, not counted", vec![Valid(1, ""), Reconcile, StartFailed(Blame::Daemon)], "backoff", vec![]),
        ("a host that cannot run it: failed at once", vec![Valid(1, ""), Reconcile, StartFailed(Blame::Host)], "failed", vec![]),
        ("restart asked while running (kept until the sandbox ends)", vec![Valid(1, ""), Reconcile, Started, Ask(Command::Restart), Exit(143), Reconcile], "starting", vec!["persist", "start (paddock restart)"]),
        // Health: probed every interval from the start; `retries` failures in a row.
        ("a checked workload starts unchecked", vec![Valid(1, TCP), Reconcile, Started], "running starting", vec![]),
        ("and is probed after its interval", vec![Valid(1, TCP), Reconcile, Started, Wait(SEC)], "running starting", vec!["probe (tcp 127.0.0.1:80)"]),
        ("not again while the probe is out", vec![Valid(1, TCP), Reconcile, Started, Wait(SEC), Wait(SEC)], "running starting", vec![]),
        ("a passing probe makes it healthy", vec![Valid(1, TCP), Reconcile, Started, Wait(SEC), Probe(true)], "running healthy", vec![]),
        ("two failures of three are not enough", vec![Valid(1, TCP), Reconcile, Started, Probe(true), Probe(false), Probe(false)], "running healthy", vec![]),
        ("a pass resets the count", vec![Valid(1, TCP), Reconcile, Started, Probe(false), Probe(false), Probe(true), Probe(false), Probe(false)], "running healthy", vec![]),
        ("the third in a row restarts it", vec![Valid(1, TCP), Reconcile, Started, Probe(true), Probe(false), Probe(false), Probe(false)], "stopping", vec!["persist", "stop (unhealthy: its health check failed)"]),
        ("through its restart policy and backoff", vec![Valid(1, TCP), Reconcile, Started, Probe(false), Probe(false), Probe(false), Exit(0)], "backoff", vec!["persist"]),
        ("never: it stays down", vec![Valid(1, NEVER), Reconcile, Started, Probe(false), Probe(false), Probe(false), Exit(143), Reconcile], "failed", vec!["persist"]),
        ("mark: shown unhealthy, left running", vec![Valid(1, MARK), Reconcile, Started, Probe(false), Probe(false), Probe(false)], "running unhealthy", vec![]),
        ("failures in the start period do not count", vec![Valid(1, SLOW), Reconcile, Started, Probe(false), Probe(false), Probe(false), Probe(false)], "running starting", vec![]),
        ("after it, they do", vec![Valid(1, SLOW), Reconcile, Started, Probe(false), Wait(Duration::from_secs(60)), Probe(false), Probe(false), Probe(false)], "stopping", vec!["persist", "stop (unhealthy: its health check failed)"]),
        ("a stop asked of an unhealthy one holds it", vec![Valid(1, TCP), Reconcile, Started, Probe(false), Probe(false), Probe(false), Ask(Command::Stop), Exit(143), Reconcile], "stopped held", vec![]),
    ];
    for (story, steps, state, effects) in rows {
        let mut s = Story::new();
        for step in &steps {
            s.step(step);
        }
        assert_eq!(s.state(), state, "{story}: {steps:?}");
        assert_eq!(s.effects, effects, "{story}: {steps:?}");
    }
}

#[test]
fn a_workload_kept_in_doubt_is_held_at_whatever_version_appears() {
    let mut core = Core::default();
    let at = Clock::read();
    core.doubt(&name(), "unreadable".into());
    let effects = core.on_manifest(&name(), valid(9, ""), at);
    assert_eq!(effects.iter().map(kind).collect::<Vec<_>>(), ["persist"]);
    assert!(core.reconcile(at, 16).effects.is_empty(), "nothing starts while in doubt");
    assert_eq!(core.get(&name()).unwrap().hold, Some(Version(9)));
    let (answer, _) = core.on_request(&name(), Command::Start, at).unwrap();
    assert_eq!(answer, Answer::Starting);
    assert_eq!(core.reconcile(at, 16).effects.iter().map(kind).collect::<Vec<_>>(), ["start (paddock start)"]);
}

#[test]
fn no_more_than_the_limit_starts_at_once() {
    let mut core = Core::default();
    let at = Clock::read();
    for i in 0..40 {
        let n = WorkloadName::try_from(format!("w{i}").as_str()).unwrap();
        core.on_manifest(&n, valid(1, ""), at);
    }
    let first = core.reconcile(at, 16);
    assert_eq!((first.effects.len(), first.queued), (16, 24));
    // Nothing reported yet: nothing more begins.
    let second = core.reconcile(at, 16);
    assert_eq!((second.effects.len(), second.queued), (0, 24));
    let started = WorkloadName::try_from("w0").unwrap();
    core.on_started(&started, 1, Duration::ZERO, at);
    assert_eq!(core.reconcile(at, 16).effects.len(), 1, "one reported, one more begins");
}

#[test]
fn restored_state_is_what_was_kept() {
    let mut core = Core::default();
    let ended = Ended { version: Version(3), failed: false, exit: Some(Exit::Code(0)) };
    core.restore(&name(), None, Some(ended), None, None);
    let w = core.get(&name()).unwrap();
    assert_eq!((w.state, w.last_exit), (State::Exited { version: Version(3) }, Some(Exit::Code(0))));
    assert_eq!(Cause::RestartAsked.to_string(), "paddock restart");
    // A failed run's exit is shown too, and so is one a hold came after.
    let failed = Ended { version: Version(3), failed: true, exit: Some(Exit::Code(3)) };
    core.restore(&name(), None, Some(failed), None, None);
    let w = core.get(&name()).unwrap();
    assert_eq!((w.state, w.last_exit), (State::Failed { version: Version(3), failures: 0 }, Some(Exit::Code(3))));
    core.restore(&name(), Some(Version(3)), Some(failed), None, None);
    assert_eq!(core.get(&name()).unwrap().last_exit, Some(Exit::Code(3)));
    // A run `paddock stop` ended (no end of its own) shows its exit too.
    core.restore(&name(), Some(Version(3)), None, None, Some(Exit::Signal(15)));
    let w = core.get(&name()).unwrap();
    assert_eq!((w.state, w.last_exit), (State::Held { version: Version(3) }, Some(Exit::Signal(15))));
    // Kept where no end says it: held, waiting out a delay, running again.
    let w = core.get(&name()).unwrap();
    assert_eq!(w.exit_kept(), Some(Exit::Signal(15)));
    let mut core = Core::default();
    let at = Clock::read();
    core.on_manifest(&name(), valid(1, ""), at);
    starts(&mut core, at);
    core.on_started(&name(), 4242, Duration::ZERO, at);
    assert_eq!(core.get(&name()).unwrap().exit_kept(), None, "its first run");
    core.on_exit(&name(), Exit::Code(3), at, 0.0);
    assert_eq!(core.get(&name()).unwrap().state_name(), "backoff");
    assert_eq!(core.get(&name()).unwrap().exit_kept(), Some(Exit::Code(3)));
    let later = at.after(Duration::from_secs(60));
    core.on_timer(later);
    assert_eq!(starts(&mut core, later), ["web"], "restarted after its delay");
    core.on_started(&name(), 4243, Duration::ZERO, later);
    let w = core.get(&name()).unwrap();
    assert_eq!((w.state_name(), w.exit_kept()), ("running", Some(Exit::Code(3))), "the run before, for a successor");
}

#[test]
fn unknown_names_are_refused() {
    let mut core = Core::default();
    assert!(core.on_request(&name(), Command::Stop, Clock::read()).is_err());
}

fn named(n: &str) -> WorkloadName {
    WorkloadName::try_from(n).unwrap()
}

/// Adds workloads, each `(name, extra TOML)`.
fn with(core: &mut Core, workloads: &[(&str, &str)], at: Clock) {
    for (n, extra) in workloads {
        core.on_manifest(&named(n), valid(1, extra), at);
    }
}

fn starts(core: &mut Core, at: Clock) -> Vec<String> {
    core.reconcile(at, 16)
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start { name, .. } => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_chain_and_a_diamond_start_in_order_and_say_whom_they_wait_for() {
    let mut core = Core::default();
    let at = Clock::read();
    // db <- api <- web, and db <- cache <- web (a diamond), plus a chain tail.
    with(
        &mut core,
        &[
            ("db", ""),
            ("api", "after = [\"db\"]"),
            ("cache", "after = [\"db\"]"),
            ("web", "after = [\"api\", \"cache\"]"),
        ],
        at,
    );
    assert_eq!(starts(&mut core, at), ["db"]);
    let web = core.get(&named("web")).unwrap();
    assert_eq!(web.state_name(), "waiting");
    assert_eq!(web.waiting.iter().map(|w| w.to_string()).collect::<Vec<_>>(), ["api (waiting)", "cache (waiting)"]);
    assert_eq!(core.get(&named("api")).unwrap().waiting[0].to_string(), "db (starting)", "as the pass left it");
    core.on_started(&named("db"), 10, Duration::ZERO, at);
    assert_eq!(starts(&mut core, at), ["api", "cache"]);
    core.on_started(&named("api"), 11, Duration::ZERO, at);
    assert!(starts(&mut core, at).is_empty(), "web still waits for cache");
    assert_eq!(core.get(&named("web")).unwrap().waiting[0].to_string(), "cache (starting)");
    core.on_started(&named("cache"), 12, Duration::ZERO, at);
    assert_eq!(starts(&mut core, at), ["web"]);
}

/// The stops among `effects`.
fn stops(effects: &[Effect]) -> usize {
    effects.iter().filter(|e| matches!(e, Effect::Stop { .. })).count()
}

/// `app` running (version 1), then edited (version 2) to come `after`
/// `db`, which no manifest defines yet: not stopped while the new
/// version would wait.
fn app_running_with_an_edit_waiting_for_db(at: Clock) -> Core {
    let mut core = Core::default();
    with(&mut core, &[("app", "")], at);
    assert_eq!(starts(&mut core, at), ["app"]);
    core.on_started(&named("app"), 10, Duration::ZERO, at);
    let edited = ManifestEvent::Valid(Desired {
        version: Version(2),
        manifest: manifest("after = [\"db\"]"),
        source: Arc::from(""),
    });
    core.on_manifest(&named("app"), edited, at);
    assert_eq!(stops(&core.reconcile(at, 16).effects), 0, "not stopped while the new version would wait");
    core
}

/// An edit that adds `after` naming a workload not ready (or no one: a
/// misspelt name) leaves the running version running until its restart
/// need not wait; it was stopped at once, and the new version waited,
/// down, for good after a misspelt name.
#[test]
fn an_edit_that_must_wait_leaves_the_running_version_running_until_it_need_not() {
    let at = Clock::read();
    let mut core = app_running_with_an_edit_waiting_for_db(at);
    let app = core.get(&named("app")).unwrap();
    assert_eq!(app.state_name(), "running");
    assert_eq!(app.waiting.iter().map(|w| w.to_string()).collect::<Vec<_>>(), ["db (no manifest defines it)"]);
    // Reverted: it waits for no one.
    core.on_manifest(&named("app"), valid(1, ""), at);
    assert!(core.reconcile(at, 16).effects.is_empty());
    assert!(core.get(&named("app")).unwrap().waiting.is_empty(), "nothing to wait for");
    core.on_manifest(
        &named("app"),
        ManifestEvent::Valid(Desired {
            version: Version(2),
            manifest: manifest("after = [\"db\"]"),
            source: Arc::from(""),
        }),
        at,
    );
    core.reconcile(at, 16);
    with(&mut core, &[("db", "")], at);
    assert_eq!(starts(&mut core, at), ["db"], "app runs on while db starts");
    assert_eq!(core.get(&named("app")).unwrap().state_name(), "running");
    core.on_started(&named("db"), 11, Duration::ZERO, at);
    let effects = core.reconcile(at, 16).effects;
    assert!(
        matches!(&effects[..], [Effect::Stop { name, cause: Cause::Changed(_), .. }] if name.as_str() == "app"),
        "{effects:?}"
    );
}

/// The same edit reverted in other words (a comment left where it was):
/// the file reads as the version that runs, which the edit's restart was
/// waiting to replace: nothing is restarted, now or once `db` runs, as
/// for a revert to the very text.
#[test]
fn an_edit_that_waits_reverted_in_other_words_restarts_nothing() {
    let at = Clock::read();
    let mut core = app_running_with_an_edit_waiting_for_db(at);
    // Version 3: version 1's manifest, with a comment.
    let effects = core.on_manifest(&named("app"), valid(3, ""), at);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Reworded { from: Version(1), desired, .. } if desired.version == Version(3))),
        "its record takes the file's text: {effects:?}"
    );
    assert!(core.reconcile(at, 16).effects.is_empty());
    let app = core.get(&named("app")).unwrap();
    assert!(app.waiting.is_empty(), "nothing to wait for");
    assert!(matches!(app.state, State::Running { version: Version(3), pid: 10, .. }), "{:?}", app.state);
    with(&mut core, &[("db", "")], at);
    assert_eq!(starts(&mut core, at), ["db"]);
    core.on_started(&named("db"), 11, Duration::ZERO, at);
    assert_eq!(stops(&core.reconcile(at, 16).effects), 0, "app runs on: its file reads as what runs");
}

/// A backoff whose end came while its start cannot go (an edit made
/// meanwhile waits for a workload not ready, the starts are full, the
/// daemon stops) is not woken for again: the loop would spin on its past
/// end, a core busy for as long as it waits (helper-102).
#[test]
fn a_backoff_past_its_end_whose_start_waits_is_not_woken_for() {
    const DELAY: &str = "[restart]\nbackoff = \"1s\"\nbackoff_max = \"1s\"";
    let backoff_end = |core: &Core| match core.get(&named("app")).unwrap().state {
        State::Backoff { until, .. } => until,
        s => panic!("{s:?}"),
    };
    let mut core = Core::default();
    let at = Clock::read();
    with(&mut core, &[("app", DELAY)], at);
    assert_eq!(starts(&mut core, at), ["app"]);
    core.on_started(&named("app"), 10, Duration::ZERO, at);
    core.on_exit(&named("app"), Exit::Code(1), at, 0.0);
    let until = backoff_end(&core);
    assert_eq!(core.wake_at(), Some(until), "woken for its delay's end");
    // Edited while it waits: the new version comes after one not ready.
    let edited = ManifestEvent::Valid(Desired {
        version: Version(2),
        manifest: manifest(&format!("after = [\"db\"]\n{DELAY}")),
        source: Arc::from(""),
    });
    core.on_manifest(&named("app"), edited, at);
    assert!(starts(&mut core, at).is_empty());
    let later = at.after(SEC * 2);
    core.on_timer(later);
    assert!(starts(&mut core, later).is_empty(), "it waits for db");
    assert_eq!(core.get(&named("app")).unwrap().state_name(), "backoff");
    assert_eq!(core.wake_at(), None, "its past end is not woken for again");
    with(&mut core, &[("db", "")], later);
    assert_eq!(starts(&mut core, later), ["db"]);
    core.on_started(&named("db"), 11, Duration::ZERO, later);
    assert_eq!(starts(&mut core, later), ["app"], "started once db is");

    // The starts full when its delay ends: the same, until one is over.
    let mut core = Core::default();
    with(&mut core, &[("app", DELAY), ("big", "")], at);
    assert_eq!(starts(&mut core, at), ["app", "big"]);
    core.on_started(&named("app"), 10, Duration::ZERO, at);
    core.on_exit(&named("app"), Exit::Code(1), at, 0.0);
    let pass = core.reconcile(later, 1);
    assert_eq!(pass.queued, 1, "no room while big starts");
    assert_eq!(core.wake_at().map(|w| w > later.now), Some(true), "only big's start deadline: {:?}", core.wake_at());
    core.on_started(&named("big"), 12, Duration::ZERO, later);
    assert_eq!(starts(&mut core, later), ["app"]);

    // The daemon's own stop starts nothing: its end is not woken for.
    let mut core = Core::default();
    with(&mut core, &[("app", DELAY)], at);
    assert_eq!(starts(&mut core, at), ["app"]);
    core.on_started(&named("app"), 10, Duration::ZERO, at);
    core.on_exit(&named("app"), Exit::Code(1), at, 0.0);
    core.shutdown(at);
    assert_eq!(core.wake_at(), None, "nothing to wake for while the daemon stops");
}

#[test]
fn a_dependency_with_a_health_check_must_be_healthy() {
    let mut core = Core::default();
    let at = Clock::read();
    with(&mut core, &[("db", "[health]\ntcp = 5432"), ("app", "after = [\"db\"]")], at);
    assert_eq!(starts(&mut core, at), ["db"]);
    core.on_started(&named("db"), 10, Duration::ZERO, at);
    assert!(starts(&mut core, at).is_empty());
    assert_eq!(core.get(&named("app")).unwrap().waiting[0].to_string(), "db (starting)");
    core.on_probe(&named("db"), 10, true, String::new(), at);
    assert_eq!(starts(&mut core, at), ["app"]);
}

#[test]
fn removing_a_dependency_leaves_the_dependent_waiting_with_a_reason() {
    let mut core = Core::default();
    let at = Clock::read();
    with(&mut core, &[("app", "after = [\"db\"]")], at);
    let pass = core.reconcile(at, 16);
    assert!(pass.effects.is_empty());
    let said: Vec<String> = pass.actions.iter().map(|a| format!("{:?} {} ({})", a.verb, a.name, a.cause)).collect();
    assert_eq!(said, ["Wait app (after db (no manifest defines it))"]);
    assert!(core.reconcile(at, 16).actions.is_empty(), "said once, not at every pass");
    // The plan says it again.
    assert_eq!(
        core.preview(std::collections::BTreeMap::from([(named("app"), valid(1, "after = [\"db\"]"))]), at).len(),
        1
    );
}

#[test]
fn shutdown_stops_dependents_first_and_their_dependencies_after_they_exit() {
    let mut core = Core::default();
    let at = Clock::read();
    with(&mut core, &[("db", ""), ("app", "after = [\"db\"]"), ("other", "")], at);
    starts(&mut core, at);
    core.on_started(&named("db"), 10, Duration::ZERO, at);
    core.on_started(&named("other"), 12, Duration::ZERO, at);
    starts(&mut core, at);
    core.on_started(&named("app"), 11, Duration::ZERO, at);
    let stopped = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Stop { name, .. } => Some(name.to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(stopped(&core.shutdown(at)), ["app", "other"]);
    assert!(stopped(&core.on_exit(&named("other"), Exit::Code(0), at, 0.0)).is_empty());
    assert_eq!(stopped(&core.on_exit(&named("app"), Exit::Code(0), at, 0.0)), ["db"]);
}

/// A run heard of long after its end (it ended while no daemon ran) is
/// judged as of its end: the decision kept before its sandbox goes
/// agrees with the one made after, its restart delay runs from its end,
/// and nothing else is dated back: a stop that follows during the
/// daemon's own stop gets its whole timeout (helper-105).
#[test]
fn a_run_heard_of_long_after_its_end_is_judged_as_of_its_end_and_nothing_else_is() {
    const GIVES_UP: &str = "[restart]\npolicy = \"on-failure\"\nmax_retries = 1\nreset_after = \"60s\"";
    let at = Clock::read();
    let (ended, heard) = (at.now + SEC * 5, at.after(SEC * 300));
    // A run that had failed once before, adopted with its count.
    let mut core = Core::default();
    core.restore(
        &name(),
        None,
        None,
        Some(Counts { version: Version(1), failures: 1, restarts: 1, halted: false }),
        None,
    );
    core.adopt(&name(), Version(1), 4242, at.now, at);
    core.on_manifest(&name(), valid(1, GIVES_UP), at);
    assert_eq!(core.would_end(&name(), Exit::Code(1), heard), None, "as of now it ran past reset_after");
    let kept = core.would_end_ended(&name(), Exit::Code(1), Some(ended), heard);
    assert!(kept.is_some_and(|e| e.failed), "as of its end, it gave up: {kept:?}");
    core.on_exit_ended(&name(), Exit::Code(1), Some(ended), heard, 0.0);
    assert_eq!(core.get(&name()).unwrap().state_name(), "failed", "as was kept");

    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, "[restart]\nbackoff = \"10s\"\nbackoff_max = \"10s\""), at);
    starts(&mut core, at);
    core.on_started(&name(), 4242, Duration::ZERO, at);
    core.on_exit_ended(&name(), Exit::Code(1), Some(ended), heard, 0.0);
    let until = match core.get(&name()).unwrap().state {
        State::Backoff { until, .. } => until,
        s => panic!("{s:?}"),
    };
    assert_eq!(until, ended + SEC * 10, "the delay runs from its end");

    let mut core = Core::default();
    with(&mut core, &[("db", ""), ("app", "after = [\"db\"]")], at);
    starts(&mut core, at);
    core.on_started(&named("db"), 10, Duration::ZERO, at);
    starts(&mut core, at);
    core.on_started(&named("app"), 11, Duration::ZERO, at);
    core.shutdown(heard);
    core.on_exit_ended(&named("app"), Exit::Code(0), Some(heard.now - SEC * 30), heard, 0.0);
    match core.get(&named("db")).unwrap().state {
        State::Stopping { deadline: Some(deadline), .. } => assert!(deadline > heard.now, "db's stop has its timeout"),
        s => panic!("{s:?}"),
    }
}

/// An end its init dates before the run began (a workload allowed to
/// trace its init can write the report) counts as at the run's start:
/// the next start is still the floor's 100 ms after this one, not at once.
#[test]
fn an_end_dated_before_its_run_began_counts_from_its_start() {
    let at = Clock::read();
    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, "[restart]\nbackoff = \"0s\""), at);
    starts(&mut core, at);
    let started = at.after(SEC * 100);
    core.on_started(&name(), 4242, Duration::ZERO, started);
    core.on_exit_ended(&name(), Exit::Code(1), Some(at.now), started, 0.0);
    let until = match core.get(&name()).unwrap().state {
        State::Backoff { until, .. } => until,
        s => panic!("{s:?}"),
    };
    assert_eq!(until, started.now + paddock::reconcile::RESTART_FLOOR);
}

/// A restart delay of a second or more is written as it begins, whatever
/// the counts (a run of `always` that exited 0 counts no failure): a
/// successor that comes within it waits out the rest (helper-105).
#[test]
fn a_restart_delay_of_a_second_or_more_is_kept_as_it_begins() {
    let at = Clock::read();
    let persisted = |backoff: &str| {
        let mut core = Core::default();
        core.on_manifest(&name(), valid(1, &format!("[restart]\npolicy = \"always\"\nbackoff = \"{backoff}\"")), at);
        starts(&mut core, at);
        core.on_started(&name(), 4242, Duration::ZERO, at);
        let later = at.after(SEC * 600);
        core.on_exit(&name(), Exit::Code(0), later, 0.0).iter().any(|e| matches!(e, Effect::Persist { .. }))
    };
    assert!(persisted("5s"));
    assert!(!persisted("100ms"), "not worth a write at every restart");
}

#[test]
fn a_start_this_host_could_not_make_is_tried_again_on_reload_and_only_that() {
    let mut core = Core::default();
    let at = Clock::read();
    with(&mut core, &[("web", ""), ("crash", "")], at);
    starts(&mut core, at);
    let failure = |what: &str| StartFailure::new(Blame::Host, std::io::Error::other(what.to_owned()));
    core.on_start_failed(&named("web"), failure("memory limit needs the memory cgroup controller"), at, 0.0);
    core.on_start_failed(&named("crash"), StartFailure::new(Blame::Workload, std::io::Error::other("no")), at, 0.0);
    assert_eq!(core.get(&named("web")).unwrap().state_name(), "failed", "not a backoff loop");
    assert!(starts(&mut core, at).is_empty());
    assert_eq!(core.retry_host_failures(at).0, [named("web")]);
    let pass = core.reconcile(at, 16);
    let said: Vec<String> = pass.actions.iter().map(|a| format!("{} ({})", a.name, a.cause)).collect();
    assert_eq!(said, ["web (paddock reload: tried again)"]);
}

/// So is one whose file is edited in words alone (a comment saying the
/// host is mended): the operator's word, as `reload` is, though the same
/// edit of a running or workload-failed one restarts nothing.
#[test]
fn a_start_this_host_could_not_make_is_tried_again_by_any_edit_of_its_file() {
    let mut core = Core::default();
    let at = Clock::read();
    with(&mut core, &[("web", ""), ("crash", "")], at);
    starts(&mut core, at);
    let failure = StartFailure::new(Blame::Host, std::io::Error::other("mount source /srv: No such file"));
    core.on_start_failed(&named("web"), failure, at, 0.0);
    core.on_start_failed(&named("crash"), StartFailure::new(Blame::Workload, std::io::Error::other("no")), at, 0.0);
    for name in ["web", "crash"] {
        let ManifestEvent::Valid(desired) = valid(2, "") else { unreachable!() };
        core.on_manifest(&named(name), ManifestEvent::Valid(desired), at);
    }
    let pass = core.reconcile(at, 16);
    let said: Vec<String> = pass.actions.iter().map(|a| format!("{} ({})", a.name, a.cause)).collect();
    assert_eq!(
        said,
        ["web (manifest edited, the same once read: a start the host failed, tried again)"],
        "the workload's own failure waits out its backoff"
    );
}

/// An adopted run's health is probed at once, not an interval after the
/// adoption: an upgrade left a healthy workload "starting" for as long,
/// and what comes after it waiting (helper-101).
#[test]
fn an_adopted_runs_health_is_probed_at_once() {
    let at = Clock::read();
    let mut core = adopted(at);
    core.on_manifest(&name(), valid(1, "[health]\ntcp = 80\ninterval = \"10s\""), at);
    let probes = |effects: &[Effect]| effects.iter().filter(|e| matches!(e, Effect::Probe { .. })).count();
    assert_eq!(core.wake_at(), Some(at.now), "due now");
    assert_eq!(probes(&core.on_timer(at)), 1);
    let started = at.after(SEC);
    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, "[health]\ntcp = 80\ninterval = \"10s\""), at);
    assert_eq!(starts(&mut core, at), ["web"]);
    core.on_started(&name(), 4242, Duration::ZERO, started);
    assert_eq!(probes(&core.on_timer(started)), 0, "a run it started is first probed an interval in");
}

/// What the image before said of a run's health (an upgrade) is taken up
/// by the image that adopts that run (helper-109): no change noted when
/// the next probe agrees, and only for that run (version and init).
#[test]
fn an_adopted_run_takes_up_the_health_its_predecessor_kept() {
    let at = Clock::read();
    let check = "[health]\ntcp = 80\ninterval = \"10s\"";
    let healthy = KeptHealth { version: Version(1), pid: 4242, status: HealthStatus::Healthy };
    let health = |core: &Core| core.get(&name()).and_then(|w| w.health.as_ref().map(|h| h.status));
    let mut core = Core::default();
    core.restore_health(&name(), healthy);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    assert_eq!(core.get(&name()).unwrap().health_kept(), Some(healthy), "kept on while its checks wait");
    core.on_manifest(&name(), valid(1, check), at);
    assert_eq!(health(&core), Some(HealthStatus::Healthy));
    let noted = |core: &Core| core.get(&name()).unwrap().history.len();
    let before = noted(&core);
    let effects = core.on_probe(&name(), 4242, true, String::new(), at);
    assert!(effects.is_empty() && noted(&core) == before, "no change: {effects:?}");
    // Another init (the run ended, and a later one was adopted): begun afresh.
    let mut core = Core::default();
    core.restore_health(&name(), healthy);
    core.adopt(&name(), Version(1), 4343, at.now, at);
    core.on_manifest(&name(), valid(1, check), at);
    assert_eq!(health(&core), Some(HealthStatus::Starting));
    assert_eq!(core.get(&name()).unwrap().health_kept(), None, "nothing said of this run yet");
    // What a probe said, for the next image (nothing written to disk).
    assert!(core.on_probe(&name(), 4343, true, String::new(), at).is_empty());
    assert_eq!(core.get(&name()).unwrap().health_kept(), Some(KeptHealth { pid: 4343, ..healthy }));
}

/// A predecessor's stop deadline ends the stop the successor carries out
/// in its first pass, and no later one (helper-115: a stop an operator's
/// start had undone left one that killed a stop weeks later at once).
#[test]
fn a_kept_stop_deadline_serves_only_the_stop_carried_out_at_once() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    let kills = |effects: &[Effect]| effects.iter().filter(|e| matches!(e, Effect::Kill { .. })).count();
    let slow = "[stop]\ntimeout = \"30s\"";
    // Held: carried out, killed when the first stop's timeout ends.
    let mut core = Core::default();
    core.restore(&name(), Some(Version(1)), None, None, None);
    core.restore_stopping(&name(), Version(1), 4242, at.now + SEC);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    core.on_manifest(&name(), valid(1, slow), at);
    assert_eq!(kinds(&core.reconcile(at, 16).effects), ["stop (paddock stop)"]);
    assert_eq!(kills(&core.on_timer(at.after(SEC * 2))), 1, "at the first stop's deadline");
    // Nothing to carry out: a later stop has its whole timeout.
    let mut core = Core::default();
    core.restore_stopping(&name(), Version(1), 4242, at.now + SEC);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    core.on_manifest(&name(), valid(1, slow), at);
    assert!(core.reconcile(at, 16).effects.is_empty(), "left running");
    let later = at.after(SEC * 3600);
    core.on_request(&name(), Command::Stop, later).unwrap();
    assert_eq!(kills(&core.on_timer(later.after(SEC))), 0, "its own timeout");
}

/// A start error kept with a restart delay is shown while it waits, and
/// no longer once a run of it is adopted (one began before the daemon died).
#[test]
fn a_kept_start_error_goes_with_the_wait_it_explains() {
    let at = Clock::read();
    let counts = Counts { version: Version(1), failures: 1, restarts: 0, halted: false };
    let mut core = Core::default();
    core.restore(&name(), None, None, Some(counts), None);
    core.restore_delay(&name(), SEC * 10, at);
    core.restore_start_error(&name(), "cannot execute /x: ENOENT".into());
    let error = |core: &Core| core.get(&name()).unwrap().error.as_ref().map(|e| e.error.to_string());
    assert_eq!(error(&core).as_deref(), Some("cannot execute /x: ENOENT"));
    core.on_manifest(&name(), valid(1, ""), at);
    assert!(error(&core).is_some(), "the same version's: still why it waits");
    core.adopt(&name(), Version(1), 4242, at.now, at);
    assert_eq!(error(&core), None, "it runs");
}

/// A core rebuilt after a daemon restart, with the sandbox of version 1
/// adopted (pid 4242).
fn adopted(at: Clock) -> Core {
    let mut core = Core::default();
    core.adopt(&name(), Version(1), 4242, at.now, at);
    core
}

#[test]
fn an_adopted_sandbox_whose_file_is_invalid_runs_on_with_its_recorded_manifest() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    // Without the manifest it was started from: stopped, as nothing says how to run it.
    let mut core = adopted(at);
    core.on_manifest(&name(), ManifestEvent::Invalid("bad".into()), at);
    assert_eq!(kinds(&core.reconcile(at, 16).effects), ["stop (manifest removed)"]);

    // With it: left running, and supervised by that manifest.
    let recorded = "stop.signal = \"SIGINT\"\n[restart]\npolicy = \"on-failure\"\nmax_retries = 1\n[health]\ntcp = 80";
    let desired = || Desired { version: Version(1), manifest: manifest(recorded), source: Arc::from(recorded) };
    let mut core = adopted(at);
    core.keep_adopted(&name(), desired(), at);
    core.on_manifest(&name(), ManifestEvent::Invalid("bad".into()), at);
    assert!(core.reconcile(at, 16).effects.is_empty(), "it runs on");
    let w = core.get(&name()).unwrap();
    assert_eq!((w.state_name(), w.running_manifest()), ("running", Some(&*manifest(recorded))));
    assert!(w.health.is_some(), "its health checks begin");
    // Its stop signal.
    let (_, effects) = core.on_request(&name(), Command::Restart, at).unwrap();
    assert!(matches!(&effects[..], [Effect::Persist { .. }, Effect::Stop { signal: Signal::Int, .. }]), "{effects:?}");
    // Its restart policy: a failure is retried with the same version and source.
    let mut core = adopted(at);
    core.keep_adopted(&name(), desired(), at);
    core.on_manifest(&name(), ManifestEvent::Invalid("bad".into()), at);
    core.on_exit(&name(), Exit::Code(1), at, 0.0);
    let later = at.after(Duration::from_secs(2));
    core.on_timer(later);
    let effects = core.reconcile(later, 16).effects;
    assert!(
        matches!(&effects[..], [Effect::Start { desired, .. }, Effect::Persist { .. }] if desired.version == Version(1) && &*desired.source == recorded),
        "{effects:?}"
    );
    // A success ends it under on-failure: exited, not restarted.
    let mut core = adopted(at);
    core.keep_adopted(&name(), desired(), at);
    core.on_exit(&name(), Exit::Code(0), at, 0.0);
    assert!(core.reconcile(at.after(SEC), 16).effects.is_empty());
    assert_eq!(core.get(&name()).unwrap().state_name(), "exited");

    // Only for the version that runs, and only where no manifest is known yet.
    let mut core = adopted(at);
    core.keep_adopted(&name(), Desired { version: Version(2), ..desired() }, at);
    assert!(core.get(&name()).unwrap().desired.is_none(), "another version is not kept");
    let mut core = adopted(at);
    core.on_manifest(&name(), valid(1, ""), at);
    core.keep_adopted(&name(), desired(), at);
    assert_eq!(core.get(&name()).unwrap().running_manifest(), Some(&*manifest("")), "the file's own manifest stays");
}

/// `paddock restart` (or an unhealthy run's restart) asked of a daemon
/// that died or upgraded before the sandbox ended: kept before the stop
/// signal goes, and carried out by the successor that adopts the sandbox
/// still running, or whose end it hears (a restart, not an end the
/// policy judges); dropped once the sandbox is gone.
/// A sandbox being stopped still runs: its init's pid is shown until it
/// ends.
#[test]
fn a_stopping_workload_keeps_its_pid_until_it_ends() {
    let at = Clock::read();
    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, ""), at);
    core.reconcile(at, 16);
    core.on_started(&name(), 4242, Duration::ZERO, at);
    core.on_request(&name(), Command::Stop, at).unwrap();
    let w = core.get(&name()).unwrap();
    assert_eq!((w.state.name(), w.state.pid()), ("stopping", Some(4242)));
    core.on_exit(&name(), Exit::Signal(15), at, 0.0);
    assert_eq!(core.get(&name()).unwrap().state.pid(), None);
}

#[test]
fn a_restart_under_way_when_the_daemon_died_is_carried_out_by_the_next() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, ""), at);
    core.reconcile(at, 16);
    core.on_started(&name(), 4242, Duration::ZERO, at);
    let (_, effects) = core.on_request(&name(), Command::Restart, at).unwrap();
    assert_eq!(kinds(&effects), ["persist", "stop (paddock restart)"], "kept before the signal");
    let replacing = core.get(&name()).unwrap().replacing.expect("kept");
    assert_eq!(replacing, Replacing { version: Version(1), unhealthy: false, halted: false, pid: Some(4242) });
    // The next daemon: what was kept restored, the sandbox of version 1
    // adopted with its init's pid (none: gone), the file read.
    let successor_adopting = |replacing: Replacing, pid: Option<i32>| {
        let mut core = Core::default();
        core.restore(&name(), None, None, None, None);
        core.restore_replacing(&name(), replacing);
        if let Some(pid) = pid {
            core.adopt(&name(), Version(1), pid, at.now, at);
        }
        core.on_manifest(&name(), valid(1, ""), at);
        core
    };
    let successor = |replacing: Replacing| successor_adopting(replacing, Some(4242));
    // Adopted running: stopped, then started again (exit 0 is no end).
    let mut core = successor(replacing);
    assert_eq!(kinds(&core.reconcile(at, 16).effects), ["stop (paddock restart)"]);
    core.on_exit(&name(), Exit::Code(0), at, 0.0);
    let effects = kinds(&core.reconcile(at, 16).effects);
    assert!(
        effects.contains(&"start (paddock restart)".to_owned()) && effects.contains(&"persist".to_owned()),
        "{effects:?}"
    );
    core.on_started(&name(), 4343, Duration::ZERO, at);
    assert!(core.reconcile(at, 16).effects.is_empty(), "restarted once, not again");
    assert_eq!(core.get(&name()).unwrap().replacing, None);
    // Its end heard first (it ended while no daemon ran): restarted too.
    let mut core = successor(replacing);
    assert_eq!(core.would_end(&name(), Exit::Code(0), at), None, "no end to keep");
    core.on_exit(&name(), Exit::Code(0), at, 0.0);
    assert!(kinds(&core.reconcile(at, 16).effects).contains(&"start (paddock restart)".to_owned()));
    // An unhealthy run's: its end is a failure, restarted after its backoff.
    let mut core = successor(Replacing { version: Version(1), unhealthy: true, halted: false, pid: Some(4242) });
    assert_eq!(kinds(&core.reconcile(at, 16).effects), ["stop (unhealthy: its health check failed)"]);
    core.on_exit(&name(), Exit::Code(0), at, 0.0);
    assert_eq!(core.get(&name()).unwrap().state_name(), "backoff");
    // Done already (the daemon died before writing so): the run adopted
    // is the new one, left alone, and what was kept is dropped.
    let mut core = successor_adopting(replacing, Some(4343));
    assert_eq!(kinds(&core.reconcile(at, 16).effects), ["persist"]);
    assert_eq!(core.get(&name()).unwrap().replacing, None);
    // Not adopted (the sandbox is gone): dropped, and started as usual.
    let mut core = successor_adopting(replacing, None);
    let effects = kinds(&core.reconcile(at, 16).effects);
    assert!(effects.contains(&"persist".to_owned()), "{effects:?}");
    assert_eq!(core.get(&name()).unwrap().replacing, None);
}

/// A daemon that dies during its own stop (`systemctl stop` cut short by
/// a kill) kept, before each signal, that the stop was its own: the next
/// daemon, adopting the run (or hearing its end), starts it again as
/// after a stop that ended, never taking the end the signal caused for
/// the workload's own (under `never` or `on-failure` an exit 0 would have
/// left it down for good).
#[test]
fn a_stop_at_the_daemons_own_stop_cut_short_is_started_again_by_the_next() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    let never = "[restart]\npolicy = \"never\"";
    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, never), at);
    core.reconcile(at, 16);
    core.on_started(&name(), 4242, Duration::ZERO, at);
    let effects = core.shutdown(at);
    assert_eq!(kinds(&effects), ["persist", "stop (the daemon is stopping)"], "kept before the signal");
    let replacing = core.get(&name()).unwrap().replacing.expect("kept");
    assert_eq!(replacing, Replacing { version: Version(1), unhealthy: false, halted: true, pid: Some(4242) });
    let successor = || {
        let mut core = Core::default();
        core.restore(&name(), None, None, None, None);
        core.restore_replacing(&name(), replacing);
        core.adopt(&name(), Version(1), 4242, at.now, at);
        core.on_manifest(&name(), valid(1, never), at);
        core
    };
    let cut = "the daemon before stopped it at its own stop, and died before it was over";
    // Its end heard first (exit 0 on the signal): no end kept, started again.
    let mut core = successor();
    assert_eq!(core.would_end(&name(), Exit::Code(0), at), None, "no end to keep");
    core.on_exit(&name(), Exit::Code(0), at, 0.0);
    assert!(kinds(&core.reconcile(at, 16).effects).contains(&format!("start ({cut})")));
    assert_eq!(core.get(&name()).unwrap().restarts, 0, "no restart counted");
    // Adopted running (the signal not yet taken): stopped, then started again.
    let mut core = successor();
    assert_eq!(kinds(&core.reconcile(at, 16).effects), [format!("stop ({cut})")]);
    core.on_exit(&name(), Exit::Code(0), at, 0.0);
    assert!(kinds(&core.reconcile(at, 16).effects).contains(&format!("start ({cut})")));
    // Not adopted (its sandbox gone too): started as after a stop that
    // ended, its failures not carried, its start no restart.
    let mut core = Core::default();
    core.restore(
        &name(),
        None,
        None,
        Some(Counts { version: Version(1), failures: 3, restarts: 2, halted: false }),
        None,
    );
    core.restore_replacing(&name(), replacing);
    core.on_manifest(&name(), valid(1, never), at);
    let effects = kinds(&core.reconcile(at, 16).effects);
    assert!(effects.contains(&"start (manifest added)".to_owned()), "{effects:?}");
    let w = core.get(&name()).unwrap();
    assert_eq!(w.restarts, 2, "no restart counted");
    assert!(format!("{:?}", w.state).contains("failures: 0"), "{:?}", w.state);
    // A stop at the daemon's own stop that ends drops what it kept: no
    // later run of the version is taken for it.
    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, never), at);
    core.reconcile(at, 16);
    core.on_started(&name(), 4242, Duration::ZERO, at);
    core.shutdown(at);
    assert_eq!(kinds(&core.on_exit(&name(), Exit::Code(0), at, 0.0)), ["persist"]);
    assert_eq!(core.get(&name()).unwrap().replacing, None);
    // A held workload's stop is its hold's: nothing more is kept.
    let mut core = Core::default();
    core.on_manifest(&name(), valid(1, never), at);
    core.reconcile(at, 16);
    core.on_started(&name(), 4242, Duration::ZERO, at);
    core.on_request(&name(), Command::Stop, at).unwrap();
    core.shutdown(at);
    assert_eq!(core.get(&name()).unwrap().replacing, None);
}

/// A manifest changed while no daemon ran: the successor, adopting the
/// sandbox of the version before (its record's manifest), says what
/// changed, as for an edit it saw, not that the manifest was added.
#[test]
fn an_edit_made_while_no_daemon_ran_is_said_to_be_a_change() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    let mut core = Core::default();
    core.restore(&name(), None, None, None, None);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    let ManifestEvent::Valid(desired) = valid(1, "env = { A = \"1\" }") else { unreachable!() };
    core.runs_adopted(&name(), desired, at);
    core.on_manifest(&name(), valid(2, "env = { A = \"2\" }"), at);
    assert_eq!(kinds(&core.reconcile(at, 16).effects), ["stop (manifest changed: env)"]);
}

/// A hold an older paddock kept, without what its manifest reads as,
/// gains it once the file is read at its version: it is written, so the
/// next daemon keeps the hold through an edit that reads the same.
#[test]
fn a_hold_kept_without_what_it_reads_as_gains_it_when_its_file_is_read() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    let mut core = Core::default();
    core.restore(&name(), Some(Version(1)), None, None, None);
    assert_eq!(kinds(&core.on_manifest(&name(), valid(1, ""), at)), ["persist"]);
    let reads = core.get(&name()).unwrap().reads_kept();
    assert_eq!(reads.iter().map(|r| r.version).collect::<Vec<_>>(), [Version(1)]);
    // The next daemon, the file reworded meanwhile: still held.
    let mut next = Core::default();
    next.restore(&name(), Some(Version(1)), None, None, None);
    next.restore_reads(&name(), reads);
    next.on_manifest(&name(), valid(2, ""), at);
    assert!(next.reconcile(at, 16).effects.is_empty());
    assert!(matches!(next.get(&name()).unwrap().state, State::Held { version: Version(2) }));
    // And with the workload's name written out as its hostname (the one
    // default that depends on the name): still the same manifest.
    let mut third = Core::default();
    third.restore(&name(), Some(Version(2)), None, None, None);
    third.restore_reads(&name(), next.get(&name()).unwrap().reads_of([Version(2)]));
    third.on_manifest(&name(), valid(3, "hostname = \"web\""), at);
    assert!(matches!(third.get(&name()).unwrap().state, State::Held { version: Version(3) }), "still held");
}

/// One that only reworded it (comments, formatting) leaves the adopted
/// sandbox running, now of the file's version: its record is rewritten,
/// its counts carried on.
#[test]
fn an_edit_that_reads_the_same_made_while_no_daemon_ran_restarts_nothing() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    let mut core = Core::default();
    let counts = Counts { version: Version(1), failures: 0, restarts: 3, halted: false };
    core.restore(&name(), None, None, Some(counts), None);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    let ManifestEvent::Valid(desired) = valid(1, "env = { A = \"1\" }") else { unreachable!() };
    core.runs_adopted(&name(), desired, at);
    let effects = core.on_manifest(&name(), valid(2, "env = { A = \"1\" }"), at);
    assert_eq!(kinds(&effects), ["reworded", "persist"]);
    assert!(
        matches!(&effects[0], Effect::Reworded { from: Version(1), desired, .. } if desired.version == Version(2)),
        "{effects:?}"
    );
    assert!(core.reconcile(at, 16).effects.is_empty());
    let w = core.get(&name()).unwrap();
    assert!(matches!(w.state, State::Running { version: Version(2), pid: 4242, .. }), "{:?}", w.state);
    assert_eq!((w.restarts, w.counts().map(|c| c.version)), (3, Some(Version(2))));
}

/// A daemon that wrote what it keeps of a reworded file's version (its
/// counts) and died before the sandbox's record named that version: its
/// successor adopts the record's version, retags it from the file, and
/// goes on from the counts kept, as if the record had been rewritten.
#[test]
fn counts_kept_of_a_reworded_version_before_the_record_named_it_go_on() {
    let at = Clock::read();
    let mut core = Core::default();
    let counts = Counts { version: Version(2), failures: 1, restarts: 3, halted: false };
    core.restore(&name(), None, None, Some(counts), None);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    let ManifestEvent::Valid(desired) = valid(1, "env = { A = \"1\" }") else { unreachable!() };
    core.runs_adopted(&name(), desired, at);
    core.on_manifest(&name(), valid(2, "env = { A = \"1\" }"), at);
    let effects = core.reconcile(at, 16).effects;
    assert!(!effects.iter().any(|e| matches!(e, Effect::Stop { .. } | Effect::Start { .. })), "{effects:?}");
    let w = core.get(&name()).unwrap();
    assert!(matches!(w.state, State::Running { version: Version(2), failures: 1, .. }), "{:?}", w.state);
    assert_eq!((w.restarts, w.counts()), (3, Some(counts)));
}

/// The end of a run stopped for being unhealthy, under `never` (or at
/// its last retry), is kept before its sandbox is let go, as a failure:
/// a daemon that died right after must not run it again.
#[test]
fn an_unhealthy_run_that_is_not_restarted_is_kept_failed_before_it_is_let_go() {
    let at = Clock::read();
    // Running with `extra`, then found unhealthy (three failed probes).
    let unhealthy = |extra: &'static str| {
        let mut core = Core::default();
        core.on_manifest(&name(), valid(1, extra), at);
        core.reconcile(at, 16);
        core.on_started(&name(), 4242, Duration::ZERO, at);
        for _ in 0..3 {
            core.on_probe(&name(), 4242, false, String::new(), at.after(Duration::from_secs(60)));
        }
        assert_eq!(core.get(&name()).unwrap().state_name(), "stopping");
        core
    };
    let ended = unhealthy(NEVER).would_end(&name(), Exit::Code(0), at);
    assert_eq!(ended, Some(Ended { version: Version(1), failed: true, exit: Some(Exit::Code(0)) }));
    // Restarted under the default policy: nothing to keep.
    assert_eq!(unhealthy(TCP).would_end(&name(), Exit::Code(0), at), None);
    // `paddock restart` asked while it stops keeps naming its run's init.
    let mut core = unhealthy(TCP);
    core.on_request(&name(), Command::Restart, at).unwrap();
    let replacing = core.get(&name()).unwrap().replacing;
    assert_eq!(replacing, Some(Replacing { version: Version(1), unhealthy: false, halted: false, pid: Some(4242) }));
}

/// `paddock stop` asked of a daemon that died before the sandbox ended:
/// the successor finds it held, and running, and carries the stop out.
#[test]
fn a_held_workload_adopted_running_is_stopped_and_stays_held() {
    let at = Clock::read();
    let kinds = |effects: &[Effect]| effects.iter().map(kind).collect::<Vec<_>>();
    let mut core = Core::default();
    core.restore(&name(), Some(Version(1)), None, None, None);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    core.on_manifest(&name(), valid(1, ""), at);
    assert_eq!(kinds(&core.reconcile(at, 16).effects), ["stop (paddock stop)"]);
    // Its exit is kept, for `status` after a restart of the daemon.
    assert_eq!(kinds(&core.on_exit(&name(), Exit::Code(143), at, 0.0)), ["persist"]);
    assert!(core.reconcile(at, 16).effects.is_empty());
    assert_eq!(core.get(&name()).unwrap().state_name(), "stopped");
    assert_eq!(core.get(&name()).unwrap().hold, Some(Version(1)));
}

#[test]
fn a_daemon_restart_goes_on_counting_failures_and_restarts() {
    const GIVES_UP: &str = "[restart]\npolicy = \"on-failure\"\nmax_retries = 2\nbackoff = \"1s\"";
    let restarts = |s: &Story| s.core.get(&name()).unwrap().restarts;
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Exit(1), Wait(SEC * 2), Reconcile, Started, Exit(1)] {
        s.step(&step);
    }
    assert_eq!((s.state().as_str(), restarts(&s)), ("backoff", 1));
    assert_eq!(s.effects, ["persist"], "its count is kept at each failure");
    // The daemon restarts while it waits: the next goes on from its count.
    for step in [Restart, Valid(1, GIVES_UP), Reconcile] {
        s.step(&step);
    }
    assert_eq!((s.state().as_str(), restarts(&s)), ("starting", 2));
    for step in [Started, Exit(1)] {
        s.step(&step);
    }
    assert_eq!(s.state(), "failed", "the third failure in a row gives up, as if the daemon had never gone");

    // Adopted running: the same.
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Exit(1), Wait(SEC * 2), Reconcile, Started, Exit(1)] {
        s.step(&step);
    }
    for step in [Wait(SEC * 3), Reconcile, Started, Restart] {
        s.step(&step);
    }
    s.core.adopt(&name(), Version(1), 4242, s.at.now, s.at);
    s.step(&Valid(1, GIVES_UP));
    assert_eq!((s.state().as_str(), restarts(&s)), ("running", 2));
    s.step(&Exit(1));
    assert_eq!(s.state(), "failed");

    // Another version starts its count afresh.
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Exit(1), Restart, Valid(2, GIVES_UP), Reconcile] {
        s.step(&step);
    }
    assert_eq!((s.state().as_str(), restarts(&s)), ("starting", 0));
    assert!(s.core.get(&name()).unwrap().counts().is_none());
}

/// What was left of a restart delay when a daemon went is waited out by
/// its successor, for the version it was counted for, unless the daemon's
/// own stop had cut the run (that one begins again at once).
#[test]
fn a_successor_waits_out_what_was_left_of_a_restart_delay() {
    let at = Clock::read();
    let counts = |halted| Counts { version: Version(1), failures: 2, restarts: 3, halted };
    let restored = |counts: Counts, v: u64| {
        let mut core = Core::default();
        core.restore(&name(), None, None, Some(counts), None);
        core.restore_delay(&name(), SEC * 10, at);
        core.on_manifest(&name(), valid(v, ""), at);
        core
    };
    let mut core = restored(counts(false), 1);
    assert!(starts(&mut core, at).is_empty(), "it waits");
    assert_eq!(core.get(&name()).unwrap().state_name(), "backoff");
    assert_eq!(core.wake_at(), Some(at.now + SEC * 10));
    let later = at.after(SEC * 10);
    core.on_timer(later);
    assert_eq!(starts(&mut core, later), ["web"]);
    let w = core.get(&name()).unwrap();
    assert_eq!((w.restarts, w.counts().map(|c| c.failures)), (4, Some(2)), "its count goes on");

    let mut core = restored(counts(true), 1);
    assert_eq!(starts(&mut core, at), ["web"], "cut by the daemon's own stop: begins again at once");
    let mut core = restored(counts(false), 2);
    assert_eq!(starts(&mut core, at), ["web"], "another version starts at once");
    // Its file found invalid: shown so, not as a backoff (helper-105).
    let mut core = Core::default();
    core.restore(&name(), None, None, Some(counts(false)), None);
    core.restore_delay(&name(), SEC * 10, at);
    core.on_manifest(&name(), ManifestEvent::Invalid("bad".into()), at);
    assert_eq!(core.get(&name()).unwrap().state_name(), "invalid");

    // The daemon died before it wrote that the retry began: the run it
    // began is adopted, and takes the count over.
    let mut core = Core::default();
    core.restore(&name(), None, None, Some(counts(false)), None);
    core.restore_delay(&name(), SEC * 10, at);
    core.adopt(&name(), Version(1), 4242, at.now, at);
    core.on_manifest(&name(), valid(1, ""), at);
    assert!(starts(&mut core, at).is_empty());
    let w = core.get(&name()).unwrap();
    assert_eq!((w.state_name(), w.restarts, w.counts().map(|c| c.failures)), ("running", 3, Some(2)));
}

/// A count reset (`paddock start`, `restart`, a manifest change) is kept
/// too: no count it dropped comes back after a daemon's restart.
#[test]
fn a_reset_count_stays_reset_across_a_daemon_restart() {
    const GIVES_UP: &str = "[restart]\npolicy = \"on-failure\"\nmax_retries = 2\nbackoff = \"1s\"";
    let restarts = |s: &Story| s.core.get(&name()).unwrap().restarts;
    // Restarted by an operator while it waits after a failure, then the
    // daemon restarts.
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Exit(1)] {
        s.step(&step);
    }
    assert_eq!(s.kept_counts.map(|c| c.failures), Some(1));
    for step in [Ask(Command::Restart), Reconcile, Started, Restart, Valid(1, GIVES_UP), Reconcile] {
        s.step(&step);
    }
    assert_eq!((s.state().as_str(), restarts(&s)), ("starting", 0));
    for step in [Started, Exit(1), Wait(SEC * 2), Reconcile, Started, Exit(1)] {
        s.step(&step);
    }
    assert_eq!(s.state(), "backoff", "two failures since the operator's restart, not three: {:?}", s.kept_counts);

    // Given up, the daemon restarts, then `paddock start`: from nothing.
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Exit(1)] {
        s.step(&step);
    }
    for _ in 0..2 {
        for step in [Wait(SEC * 3), Reconcile, Started, Exit(1)] {
            s.step(&step);
        }
    }
    assert_eq!((s.state().as_str(), restarts(&s)), ("failed", 2));
    for step in [Restart, Valid(1, GIVES_UP)] {
        s.step(&step);
    }
    assert_eq!((s.state().as_str(), restarts(&s)), ("failed", 2), "shown as before the restart");
    for step in [Ask(Command::Start), Reconcile] {
        s.step(&step);
    }
    let w = s.core.get(&name()).unwrap();
    assert_eq!((w.state_name(), w.state.failures(), w.restarts), ("starting", 0, 0));
}

/// A workload the daemon stopped at its own stop (`systemctl stop`, a
/// reboot) begins again at the next daemon's start: its failures are not
/// carried (`max_retries` counts from none) and that start is no restart;
/// its restarts are shown as they were. (A daemon that died carries both:
/// the tests above.)
#[test]
fn a_workload_the_daemons_stop_stopped_begins_again_at_the_next_daemons_start() {
    const GIVES_UP: &str = "[restart]\npolicy = \"on-failure\"\nmax_retries = 2\nbackoff = \"1s\"";
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Exit(1), Wait(SEC * 2), Reconcile, Started] {
        s.step(&step);
    }
    assert_eq!(s.kept_counts.map(|c| (c.failures, c.restarts)), Some((1, 1)));
    for step in [Shutdown, Exit(0)] {
        s.step(&step);
    }
    assert!(s.effects.contains(&"persist".to_owned()), "{:?}", s.effects);
    for step in [Restart, Valid(1, GIVES_UP), Reconcile] {
        s.step(&step);
    }
    let w = s.core.get(&name()).unwrap();
    assert_eq!((w.state_name(), w.state.failures(), w.restarts), ("starting", 0, 1));
    // Two failures in a row are within max_retries = 2 again.
    for step in [Started, Exit(1), Wait(SEC * 2), Reconcile, Started, Exit(1)] {
        s.step(&step);
    }
    assert_eq!(s.state(), "backoff", "{:?}", s.kept_counts);
    // Never counted: nothing is kept for it.
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Shutdown, Exit(0)] {
        s.step(&step);
    }
    // (What the stop kept before its signal is dropped: no counts.)
    assert_eq!(s.kept_counts, None, "{:?}", s.effects);
}

/// A restart asked while it waits out a backoff is kept at once, not at
/// its next start (which an `after` may hold back); a start the daemon
/// could not make is tried again without counting as a restart.
#[test]
fn a_restart_asked_in_a_backoff_is_kept_and_a_daemons_retry_is_no_restart() {
    const GIVES_UP: &str = "[restart]\npolicy = \"on-failure\"\nmax_retries = 2\nbackoff = \"1s\"";
    let mut s = Story::new();
    for step in [Valid(1, GIVES_UP), Reconcile, Started, Exit(1), Ask(Command::Restart)] {
        s.step(&step);
    }
    assert!(s.effects.contains(&"persist".to_owned()), "{:?}", s.effects);
    for step in [Restart, Valid(1, GIVES_UP), Reconcile] {
        s.step(&step);
    }
    let w = s.core.get(&name()).unwrap();
    assert_eq!((w.state_name(), w.state.failures(), w.restarts), ("starting", 0, 0));

    let mut s = Story::new();
    for step in [Valid(1, ""), Reconcile, StartFailed(Blame::Daemon), Wait(SEC * 3), Reconcile] {
        s.step(&step);
    }
    assert_eq!((s.state().as_str(), s.core.get(&name()).unwrap().restarts), ("starting", 0));
    assert_eq!(s.effects, ["start (its restart delay is over)"], "nothing to keep");
}
