//! The daemon's event loop, on a single-threaded tokio runtime. Signals,
//! control requests, sandbox events, scan results, file changes, timers
//! and the watchdog arrive on select arms; each ends in a reconcile once
//! the queues are drained. Nothing on the loop blocks: scans and their
//! validation run on a blocking thread (`scan::run_job`), and so do the
//! waits of a sandbox's end (`executor.rs`). SIGTERM is heard first, so
//! it is honoured even when everything else is busy. Control requests
//! are answered in `control`.

mod control;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use super::executor::{SandboxEvent, SandboxExecutor};
use super::kept::{KeptStore, repair_allocations};
use super::notify::{self, Notifier};
use super::records;
use super::scan::{self, Rescan, Snapshot};
use super::server::{self, Control};
use super::signals;
use super::store::DiskStore;
use super::supervisor::Supervisor;
use super::upgrade;
use super::watch::{Change, Watch, WatchError};
use crate::model::WorkloadName;
use crate::protocol::{Request, Response};
use crate::reconcile::Clock;
use crate::sandbox::cgroup::{Cgroup, Layout};
use crate::validate::Validator;
use control::{Context, answer, preview};

/// Tens of milliseconds: an editor's write-then-rename (microseconds apart)
/// lands as one change, and reload latency stays low (bench/daemon.py).
const DEBOUNCE: Duration = Duration::from_millis(20);

/// How long messages to systemd that found no room may wait for it before
/// this image is gone (an upgrade's exec, the exit).
const SETTLE_NOTIFY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("starting the event loop: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error("state directory: {0}")]
    State(std::io::Error),
    #[error("run directory: {0}")]
    RunDir(std::io::Error),
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error(
        "cannot tell whether a predecessor's sandboxes still run ({}); nothing is started, lest a workload run twice, and their records are kept for the next start: free what the host lacks (descriptors, memory) and start paddock again",
        .0.join("; ")
    )]
    Recovery(Vec<String>),
}

/// Everything the loop is told at start.
pub struct Options {
    pub workloads: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub resync: Duration,
    pub start_timeout: Duration,
    /// How long a shutdown may take before what is left is killed.
    pub shutdown_timeout: Duration,
    pub metrics: Option<std::net::SocketAddr>,
    pub executor: super::executor::Settings,
    pub store: DiskStore,
    /// The control socket a previous image handed over (an upgrade),
    /// taken while the daemon was one thread.
    pub inherited_listener: Option<std::os::fd::OwnedFd>,
    /// What the configuration was read from, for a reload to tell whether
    /// it changed since (`upgrade::reload_reexecutes`).
    pub config_files: upgrade::ConfigFiles,
}

type Daemon = Supervisor<SandboxExecutor, DiskStore>;

/// A result from a blocking thread.
enum Job {
    Scan(scan::Outcome),
    Preview(oneshot::Sender<Response>, Result<control::Preview, String>),
    /// The new binary's check of the configuration (`paddock daemon
    /// --validate`), run beside the loop before an upgrade.
    Checked(Checked),
    /// Logs of names gone for a day, each name's files (`look_for_gone_logs`).
    GoneLogs(Vec<(String, Vec<std::path::PathBuf>)>),
}

/// An upgrade's check, done: the binary, and what the check said.
struct Checked {
    binary: std::path::PathBuf,
    /// The file that was checked (`upgrade::identity`), taken before.
    identity: Option<upgrade::Identity>,
    /// The configuration's files as they were checked, taken before.
    config: upgrade::ConfigFiles,
    outcome: CheckOutcome,
}

impl Checked {
    /// Whether the binary or the configuration changed since they were
    /// checked (a second package upgrade, an edit): the exec would run
    /// what no check saw, and a new image that refused it would end the
    /// daemon. What changed, in words.
    fn changed_since(
        binary: &std::path::Path,
        identity: Option<upgrade::Identity>,
        config: &upgrade::ConfigFiles,
    ) -> Option<&'static str> {
        if upgrade::identity(binary) != identity {
            Some("the binary was replaced")
        } else if !config.changed().is_empty() {
            Some("the configuration was edited")
        } else {
            None
        }
    }
}

enum CheckOutcome {
    Passed,
    /// What the binary said (or that it could not be run, or did not answer).
    Refused(String),
    /// The check itself failed, in this daemon (a panic).
    Failed,
}

impl CheckOutcome {
    /// What the clients of a check of `binary` that did not pass are told.
    fn refusal(self, binary: &std::path::Path) -> Option<String> {
        match self {
            CheckOutcome::Passed => None,
            CheckOutcome::Refused(said) => Some(format!(
                "not upgraded: {} would not start with this daemon's configuration; every workload keeps running under this daemon; mend what it says, then reload or upgrade again (`paddock daemon --validate` checks it):\n{said}",
                binary.display()
            )),
            CheckOutcome::Failed => Some(format!(
                "not upgraded: the check of {} failed inside this daemon (its log says more); every workload keeps running; upgrade again",
                binary.display()
            )),
        }
    }
}

/// An upgrade a stop came before: its clients are told so.
const STOPPED_UPGRADE: &str = "the daemon was asked to stop: not upgraded; every workload is being stopped";

/// An upgrade's check under way: the clients that wait for its outcome,
/// and what cancels it.
#[derive(Default)]
struct Checking {
    waiting: Vec<oneshot::Sender<Response>>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// Rescans: one at a time; what asks meanwhile is served by the next.
#[derive(Default)]
struct Scans {
    running: bool,
    /// How much the scan under way (or the last) reads.
    kind: Rescan,
    /// Another scan is wanted, and how much it must read.
    wanted: Option<Rescan>,
    /// Reloads waiting for the scan under way, and for the next one.
    current: Vec<oneshot::Sender<Response>>,
    next: Vec<oneshot::Sender<Response>>,
    /// A SIGHUP's READY=1 waits for the scan under way, or for the next one.
    hup_current: bool,
    hup_next: bool,
    /// An upgrade was asked (by `paddock upgrade` or a reload, whose
    /// answers wait here, or by SIGHUP after the binary was replaced).
    upgrade: Option<Vec<oneshot::Sender<Response>>>,
    /// The new binary's check runs (the upgrade waits for `Job::Checked`).
    /// One asked meanwhile waits in `upgrade`: served by the exec that
    /// follows a check that passes, else checked again.
    checking: Option<Checking>,
    /// Files the last scan saw gone, since when: taken as they were, and
    /// looked at again once they may count as removed (`gone_wait`).
    gone: BTreeMap<String, std::time::Instant>,
}

impl Scans {
    /// An upgrade is asked; the clients given (none for a SIGHUP) wait
    /// for its outcome.
    fn want_upgrade(&mut self, waiting: impl IntoIterator<Item = oneshot::Sender<Response>>) {
        self.upgrade.get_or_insert_with(Vec::new).extend(waiting);
    }

    /// Begins the new binary's check of the configuration for the upgrade
    /// asked, beside the loop (workloads go on being restarted and answered
    /// meanwhile); its outcome comes as `Job::Checked`. Returns the clients
    /// and why, when it cannot begin.
    fn begin_check(
        &mut self,
        jobs: &mpsc::UnboundedSender<Job>,
        config: &upgrade::ConfigFiles,
    ) -> Option<(Vec<oneshot::Sender<Response>>, String)> {
        let waiting = self.upgrade.take()?;
        let Some((binary, _)) = upgrade::installed() else {
            return Some((waiting, "cannot find the installed binary (/proc/self/exe) to re-execute".to_owned()));
        };
        let checking = Checking { waiting, ..Checking::default() };
        let (cancel, tx, config) = (checking.cancel.clone(), jobs.clone(), config.clone());
        let checker = move || {
            let identity = upgrade::identity(&binary);
            let config = config.retaken();
            let outcome = match std::panic::catch_unwind(|| upgrade::validate(&binary, &cancel)) {
                Ok(Ok(())) => CheckOutcome::Passed,
                Ok(Err(said)) => CheckOutcome::Refused(said),
                Err(_) => CheckOutcome::Failed,
            };
            let _ = tx.send(Job::Checked(Checked { binary, identity, config, outcome }));
        };
        // A thread of its own, not the runtime's: the daemon's exit never
        // waits for it (a stop cancels it).
        match std::thread::Builder::new().name("paddock-upgrade".into()).spawn(checker) {
            Ok(_) => {
                self.checking = Some(checking);
                None
            }
            Err(e) => Some((checking.waiting, format!("not upgraded: cannot start the new binary's check: {e}"))),
        }
    }

    /// The daemon is asked to stop: the upgrades asked are not made, and
    /// a check under way is cancelled (its outcome, if it comes, is moot).
    fn abandon_upgrade(&mut self) {
        answer_all(self.upgrade.take().unwrap_or_default(), STOPPED_UPGRADE);
        if let Some(checking) = &mut self.checking {
            checking.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            answer_all(std::mem::take(&mut checking.waiting), STOPPED_UPGRADE);
        }
    }
}

/// Tells every client that waits `message`, as an error.
fn answer_all(waiting: Vec<oneshot::Sender<Response>>, message: &str) {
    for reply in waiting {
        let _ = reply.send(Response::Error(message.to_owned()));
    }
}

/// How long past `shutdown_timeout` the daemon's stop may take: the last
/// kill heard, the networks undone, the exit.
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// What the daemon tells systemd as it begins to stop: that it stops,
/// and to wait for it as long as `shutdown_timeout` lets the workloads
/// stop (EXTEND_TIMEOUT_USEC, systemd 236 on), so that a shutdown_timeout
/// longer than the unit's `TimeoutStopSec=` is not cut short by systemd
/// killing the daemon, which would leave the workloads running with no
/// one to stop them.
fn stopping(shutdown_timeout: Duration) -> String {
    format!("STOPPING=1\nEXTEND_TIMEOUT_USEC={}", (shutdown_timeout + STOP_MARGIN).as_micros())
}

/// Answers, as the daemon is about to re-execute itself, what would
/// otherwise see its connection closed with no answer: the upgrade's
/// clients, the reloads waiting for a scan, and every request still queued
/// for the loop. An upgrade or a reload is served by the exec (the new
/// image reads every manifest as it starts): it is told so, and its client
/// waits for the new image as `paddock upgrade`'s does. Anything else is
/// told to ask again. Returns how many were answered.
fn answer_before_exec(
    control: &mut mpsc::UnboundedReceiver<Control>,
    served: impl IntoIterator<Item = oneshot::Sender<Response>>,
    text: &str,
) -> usize {
    let again = "the daemon is re-executing its binary (an upgrade), every workload running: ask again in a moment";
    let done = || Response::Done(text.to_owned());
    let mut told = served.into_iter().map(|reply| reply.send(done()).is_ok()).filter(|ok| *ok).count();
    while let Ok(request) = control.try_recv() {
        let answered = match request {
            Control::Ask(Request::Reload | Request::Upgrade, reply) => reply.send(done()).is_ok(),
            Control::Ask(_, reply) => reply.send(Response::Error(again.to_owned())).is_ok(),
            Control::Exec(_, _, reply) => reply.send(Err(again.to_owned())).is_ok(),
            // A scrape, or a `status --watch`, that the exec ends.
            Control::Metrics(_) | Control::Watch(_) => false,
        };
        told += usize::from(answered);
    }
    told
}

/// How long an exec waits for the connections accepted before it to be
/// answered: a client that has sent no request by then is cut off.
const ANSWERED_WAIT: Duration = Duration::from_millis(200);

/// `answer_before_exec` until every connection the control socket
/// accepted has its answer written (the gate closed, none comes after),
/// or `ANSWERED_WAIT` has passed.
async fn answer_everyone_before_exec(control: &mut mpsc::UnboundedReceiver<Control>, gate: &server::Gate, text: &str) {
    let deadline = tokio::time::Instant::now() + ANSWERED_WAIT;
    loop {
        answer_before_exec(control, None, text);
        if gate.unanswered() == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        // The answers' tasks write them meanwhile.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cut = gate.unanswered();
    if cut > 0 {
        tracing::warn!(
            connections = cut,
            "clients that sent no request within {ANSWERED_WAIT:?} are cut off by the exec"
        );
    }
}

/// Runs until SIGTERM or SIGINT, then stops every workload and returns.
pub fn run(options: Options, validator: Validator, notifier: Notifier) -> Result<(), LoopError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(LoopError::Runtime)?;
    runtime.block_on(async move { serve(options, Arc::new(validator), notifier).await })
}

/// How long recovery waits before looking again at records it could not
/// read (`recover`): 31 s in all, within systemd's start timeout.
const RECOVERY_RETRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// Before anything starts: one daemon per state directory and per run
/// directory, the sandboxes a dead predecessor left stopped, its kept
/// state and id table read back. Returns the locks, and what the adopted
/// sandboxes' records say.
fn recover(
    state_dir: &Path,
    run_dir: &Path,
    cgroups: &Layout,
    group: &str,
    daemon: &mut Daemon,
) -> Result<([records::Lock; 2], Adopted), LoopError> {
    let lock = records::lock(state_dir).map_err(LoopError::State)?;
    let run_lock = records::lock_run_dir(run_dir).map_err(LoopError::RunDir)?;
    // Writes a killed daemon or `paddock run` left half done (the files
    // themselves are intact): the id table's, the sandbox records'.
    crate::fsutil::remove_abandoned_temporaries(state_dir);
    crate::fsutil::remove_abandoned_temporaries(&state_dir.join("sandboxes"));
    // What `paddock run`s killed with -9 left in the host's pid namespace.
    Cgroup::sweep_runs(cgroups);
    // What cannot be told now (the host out of descriptors or memory for a
    // moment) is looked at again, for half a minute, before giving up: a
    // daemon that exits at once would be restarted by systemd until its
    // start limit, and then never again. First what is only read: the kept
    // state (its holds and one-shots' ends) and the network records.
    let unread = || {
        let mut unread = KeptStore::new(state_dir).unread_now();
        let networks = state_dir.join("networks");
        if let Err(e) = std::fs::read_dir(&networks)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            unread.push(format!("{}: {e}", networks.display()));
        }
        unread
    };
    let mut waits = RECOVERY_RETRIES.iter();
    let mut now = unread();
    while !now.is_empty() {
        let Some(wait) = waits.next() else { return Err(LoopError::Recovery(now)) };
        tracing::warn!(files = ?now, "cannot read what a predecessor kept; looking again in {wait:?}");
        std::thread::sleep(*wait);
        now = unread();
    }
    // Read once (a load moves corrupt files aside): what fails to be read
    // in this moment holds its workload in doubt.
    let loaded = KeptStore::new(state_dir).load(state_dir);
    let mut known: Vec<String> = loaded.kept.keys().map(ToString::to_string).collect();
    if let Ok(table) = crate::idmap::Allocations::load(state_dir) {
        known.extend(table.iter().map(|(n, _)| n.to_owned()));
    }
    let mut found = records::recover(state_dir, cgroups, group, &known);
    for wait in waits {
        if found.unknown.is_empty() {
            break;
        }
        tracing::warn!(records = ?found.unknown, "cannot tell whether a predecessor's sandboxes still run; looking again in {wait:?}");
        std::thread::sleep(*wait);
        found = found.then(records::recover(state_dir, cgroups, group, &known));
    }
    if !found.unknown.is_empty() {
        return Err(LoopError::Recovery(found.unknown));
    }
    if !found.stopped.is_empty() {
        tracing::warn!(workloads = ?found.stopped, "stopped the sandboxes of a daemon that died that could not be adopted; they start anew");
    }
    let doubtful = repair_allocations(state_dir, &loaded.kept, &found.slices);
    // The names of this daemon's workloads are its own in the id table (a
    // table an older daemon wrote does not say whose each entry is).
    // Those it adopts too: a kept file is written behind a start, so a
    // daemon killed at once may have left none.
    let claimed = crate::idmap::Allocations::update(state_dir, |t| {
        t.claim(loaded.kept.keys().chain(found.adopted.iter().map(|(name, ..)| name)).map(|n| n.as_str()));
        Ok(())
    });
    if let Err(e) = claimed {
        tracing::warn!(error = %e, "cannot mark the daemon's workloads in the id table");
    }
    daemon.store.refresh();
    daemon.restore(loaded, doubtful);
    for (name, why) in found.doubted {
        daemon.doubt(&name, why);
    }
    let at = Clock::read();
    let mut adopted = Adopted::default();
    for (name, sandbox, record) in found.adopted {
        // Only a text whose hash is the version the record names.
        match record.source.as_deref().filter(|s| Some(scan::version_of(s)) == record.version) {
            Some(source) => drop(adopted.recorded.insert(format!("{name}.toml"), Arc::from(source))),
            None => adopted.without_text.push((name.clone(), record.clone())),
        }
        // Its uptime goes on from when it was started, not from now: by
        // its init's start on the boot clock, which no step of the wall
        // clock moves (a step made the uptime decades, or nothing).
        let ran = crate::sandbox::process::running_for(record.start_time).unwrap_or_default();
        let since = at.now.checked_sub(ran).unwrap_or(at.now);
        daemon.adopt(&name, record.version.unwrap_or(crate::reconcile::Version(0)), sandbox.pid.as_raw(), since, at);
        daemon.executor.adopt(&name, sandbox);
    }
    daemon.executor.restore_networks();
    Ok(([lock, run_lock], adopted))
}

/// What the records of the adopted sandboxes say.
#[derive(Default)]
struct Adopted {
    /// The manifest text each was started from, by file (for the first scan).
    recorded: BTreeMap<String, Arc<str>>,
    /// The records without it (written by an older paddock).
    without_text: Vec<(WorkloadName, records::Record)>,
}

/// Reads that failed for want of descriptors or memory (a scan's
/// `again`): tried again after a pause that doubles while they keep
/// failing (1 s to 16 s), said when what fails changes and when they
/// succeed again, not at every try.
struct Rereads {
    pause: Duration,
    /// What was said last, while reads fail.
    said: Option<String>,
    /// The rescan to take again: as much as the largest that failed, until
    /// one as large succeeds.
    wanted: Option<Rescan>,
    at: Option<tokio::time::Instant>,
}

const REREAD_FIRST: Duration = Duration::from_secs(1);
const REREAD_MOST: Duration = Duration::from_secs(16);

impl Rereads {
    fn new() -> Self {
        Rereads { pause: REREAD_FIRST, said: None, wanted: None, at: None }
    }

    /// After a scan of kind `ran` ended with `outcome`.
    fn after(&mut self, outcome: &scan::Outcome, ran: Rescan) {
        let Some(kind) = outcome.again else {
            if self.wanted.is_none_or(|wanted| wanted <= ran) {
                // (Not when the directory is refused for a lasting reason: that is said.)
                if self.said.take().is_some() && outcome.refused.is_none() {
                    tracing::info!("the manifests can be read again");
                }
                *self = Rereads::new();
            }
            return;
        };
        let pause = self.pause;
        let what = match (&outcome.refused, outcome.unread.iter().next()) {
            (Some(why), _) => why.clone(),
            (None, Some((file, why))) => format!("{} files, {file} first: {why}", outcome.unread.len()),
            (None, None) => String::new(),
        };
        if self.said.as_ref() != Some(&what) {
            tracing::warn!(
                "cannot read the manifests for want of descriptors or memory ({what}): what was read before stands; looking again in {pause:?}, then less often while it lasts"
            );
        }
        self.said = Some(what);
        self.wanted = Some(self.wanted.map_or(kind, |wanted| wanted.max(kind)));
        self.at = Some(tokio::time::Instant::now() + pause);
        self.pause = (pause * 2).min(REREAD_MOST);
    }

    /// The rescan to take now that the pause is over.
    fn due(&mut self) -> Option<Rescan> {
        self.at = None;
        self.wanted
    }
}

/// How often gone names' logs are looked for (they are kept a day).
const GONE_LOGS_EVERY: Duration = Duration::from_secs(60 * 60);

/// The logs of names no workload has had for a day (`GONE_LOGS_KEPT`),
/// looked for off the event loop, once the directory was read (a daemon
/// that could not read it knows of no workload of it); removed by the
/// loop (`Job::GoneLogs`) if no workload has the name by then.
fn look_for_gone_logs(state_dir: &Path, daemon: &Daemon, jobs: &mpsc::UnboundedSender<Job>) {
    if !daemon.core().files_seen() {
        return;
    }
    let (dir, owners, jobs) = (state_dir.join("logs"), daemon.log_owners(), jobs.clone());
    tokio::spawn(super::workers::blocking(move || {
        let before = std::time::SystemTime::now() - crate::logline::GONE_LOGS_KEPT;
        let gone = crate::logline::gone_logs(&dir, |name| owners.contains(name), before);
        if !gone.is_empty() {
            let _ = jobs.send(Job::GoneLogs(gone));
        }
    }));
}

/// Records written before paddock kept the manifest's text gain it from
/// the file, where the first scan read the version the sandbox runs: a
/// bad edit before the next daemon restart leaves it running too.
fn add_texts(state_dir: &Path, snapshot: &Snapshot, without_text: Vec<(WorkloadName, records::Record)>) {
    for (name, mut record) in without_text {
        let Some(scan::Found::Read { text, version, .. }) = snapshot.get(&format!("{name}.toml")) else { continue };
        // Still the sandbox's record: one whose init died meanwhile was
        // removed by its listener (on this thread, so not while this runs).
        if record.version != Some(*version) || records::read(state_dir, &name).as_ref() != Some(&record) {
            continue;
        }
        record.source = Some(text.to_string());
        if let Err(e) = records::write(state_dir, &name, &record) {
            tracing::warn!(workload = %name, error = %e, "cannot add the manifest's text to a sandbox record");
        }
    }
}

async fn serve(options: Options, validator: Arc<Validator>, notifier: Notifier) -> Result<(), LoopError> {
    let (sandbox_tx, mut sandbox_rx) = mpsc::unbounded_channel::<SandboxEvent>();
    // Requests have a channel of their own, heard before sandbox events:
    // a status answer never waits behind a thousand exits.
    let (control_tx, mut control) = mpsc::unbounded_channel::<Control>();
    let (job_tx, mut jobs) = mpsc::unbounded_channel::<Job>();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
        ^ u64::from(std::process::id());
    let Options {
        workloads,
        state_dir,
        socket,
        resync,
        start_timeout,
        shutdown_timeout,
        metrics,
        executor,
        store,
        inherited_listener,
        config_files,
    } = options;
    let (cgroups, group) = (executor.cgroups.clone(), executor.cgroup_group.clone());
    let run_dir = executor.networks.run_dir().to_owned();
    let mut daemon: Daemon =
        Supervisor::new(SandboxExecutor::new(executor, sandbox_tx), store, workloads.clone(), state_dir.clone(), seed)
            .with_start_timeout(start_timeout);
    // Before anything starts, and before the socket says a daemon is here.
    let (_locks, adopted) = recover(&state_dir, &run_dir, &cgroups, &group, &mut daemon)?;
    let mut watch = Watch::new(&workloads)?;
    daemon.unwatched = !watch.watching();
    // Where it listens: the configured path, or the inherited one when
    // an upgrade could not move it there.
    let (listener, socket) = server::bind(&socket, inherited_listener)?;
    if let Some(addr) = metrics {
        tokio::spawn(server::metrics(addr, control_tx.clone()));
    }
    // A copy of the listening socket, handed to this process's next image
    // on an upgrade (so no client is refused across it).
    let handover = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned().map_err(LoopError::State)?;
    let gate = server::Gate::default();
    tokio::spawn(server::serve(listener, control_tx, gate.clone()));
    // Heard from now on, what came since the daemon's start first.
    let (signal_tx, mut heard) = mpsc::unbounded_channel::<Signal>();
    let requeue = signal_tx.clone();
    let taker = signals::Taker::start(signal_tx).map_err(LoopError::Signals)?;

    // The first scan and reconcile, and the outcome of its starts, before
    // READY=1: `systemctl start paddock` returns with the workloads up.
    // Workloads adopted from a predecessor keep their ports against files
    // that do not run (both are read anew by this first scan); one whose
    // file is invalid now runs on with the manifest it was started from.
    let held = scan::Held {
        running: daemon.running_files(),
        restored: daemon.restored_files(),
        recorded: adopted.recorded,
        writes: Some(watch.writes.clone()),
        ..Default::default()
    };
    let mut first = scan_now(&workloads, &Snapshot::new(), Rescan::Everything, &validator, held).await;
    let first_gone_until = first.gone_until();
    let first_gone = std::mem::take(&mut first.gone);
    let mut rereads = Rereads::new();
    let mut logs_looked_at: Option<std::time::Instant> = None;
    rereads.after(&first, Rescan::Everything);
    daemon.apply(first, Clock::read());
    add_texts(&state_dir, daemon.snapshot(), adopted.without_text);
    // The first scan said which workloads exist: recorded networks that
    // none of them wants can go.
    daemon.executor.release_from_now_on();
    daemon.reconcile(Clock::read());
    // A stop asked meanwhile does not wait for the starts: the loop has it.
    let mut asked = Vec::new();
    settle(&mut daemon, &mut sandbox_rx, start_timeout, &notifier, &mut heard, &mut asked).await;
    for signal in asked {
        let _ = requeue.send(signal);
    }
    let _ = notifier.notify(&format!("READY=1\nSTATUS={}", daemon.summary()));

    let mut resync = ticks(resync);
    resync.tick().await;
    let mut watchdog = notifier.watchdog_interval().map(ticks);
    let mut scans = Scans { gone: first_gone, ..Scans::default() };
    let mut shutting_down = false;
    // Events only mark the plan stale; one reconcile runs once the queues
    // are drained (level-triggered: it looks at everything anyway). The
    // starts the first pass left are begun by the passes that follow.
    let mut stale = true;
    // A pass left starts for later and nothing is starting that would
    // wake the loop: go round again at once.
    let mut again = false;
    let mut debounce: Option<tokio::time::Instant> = None;
    // When a file still being written at the last scan is read anyway.
    let mut write_wait: Option<tokio::time::Instant> = watch.writes.patience_ends().map(Into::into);
    let mut gone_wait: Option<tokio::time::Instant> = first_gone_until.map(Into::into);
    let mut told: Vec<String> = Vec::new();
    // When a shutdown must be over, and whether what was left was killed.
    let (mut out_of_time, mut killed) = (tokio::time::Instant::now(), false);
    let mut last_status = String::new();
    // `status --watch` clients, each with what it was sent last.
    let mut watchers: Vec<(tokio::sync::watch::Sender<Response>, String)> = Vec::new();
    // An upgrade whose check has ended, for the loop to carry out.
    let mut checked: Option<Checked> = None;
    loop {
        let wake = daemon.wake_at();
        tokio::select! {
            biased;
            Some(signal) = heard.recv(), if !shutting_down => match signal {
                Signal::SIGHUP => {
                    let _ = notifier.notify("RELOADING=1");
                    if let Some(why) = upgrade::reload_reexecutes(&config_files) {
                        // `systemctl reload paddock` after a package upgrade, or
                        // an edit of paddock.toml: the new binary, or the new
                        // configuration, taken by re-executing.
                        tracing::info!("SIGHUP: {why}; re-executing the daemon, workloads keep running");
                        scans.want_upgrade(None);
                    } else {
                        tracing::info!("SIGHUP: rescanning");
                        daemon.retry_host_failures(Clock::read());
                        scans.hup_next = true;
                        scans.wanted = Some(Rescan::Everything);
                    }
                }
                _ => {
                    tracing::info!("{signal}: stopping every workload");
                    scans.abandon_upgrade();
                    shutting_down = true;
                    out_of_time = tokio::time::Instant::now() + shutdown_timeout;
                    let _ = notifier.notify(&stopping(shutdown_timeout));
                    daemon.shutdown(Clock::read());
                }
            },
            _ = tokio::time::sleep_until(out_of_time), if shutting_down && !killed => {
                killed = true;
                let n = daemon.kill_all();
                tracing::warn!(left = n, "the shutdown took {shutdown_timeout:?} (shutdown_timeout): killed what was left");
            }
            Some(control) = control.recv() => match control {
                Control::Watch(watcher) => watchers.push((watcher, String::new())),
                control => {
                    let cx = Context {
                        validator: &validator,
                        jobs: &job_tx,
                        workloads: &workloads,
                        notifier: &notifier,
                        config_files: &config_files,
                    };
                    stale |= answer(control, &mut daemon, &mut scans, shutting_down, &cx);
                }
            },
            Some(event) = sandbox_rx.recv() => {
                // A probe that changes no health changes nothing to plan.
                let changes = daemon.on_sandbox(event, Clock::read());
                stale |= changes && !shutting_down;
            }
            Some(job) = jobs.recv() => match job {
                Job::Scan(mut outcome) => {
                    scans.running = false;
                    gone_wait = outcome.gone_until().map(Into::into);
                    scans.gone = std::mem::take(&mut outcome.gone);
                    rereads.after(&outcome, scans.kind);
                    daemon.apply(outcome, Clock::read());
                    watch.rearm();
                    daemon.unwatched = !watch.watching();
                    // A file being written is read once its writer closes
                    // it, or after WRITE_PATIENCE: looked at again then.
                    write_wait = watch.writes.patience_ends().map(Into::into);
                    if (!scans.current.is_empty() || scans.hup_current) && !shutting_down {
                        // A reload: answered once what it found is under way.
                        let mut report = daemon.reconcile(Clock::read());
                        report.invalid = daemon.invalid_now();
                        report.refused = daemon.refused_now();
                        // Of files not read now: none, while refused.
                        if report.refused.is_none() {
                            report.warnings = daemon.warnings_now();
                        }
                        let _ = notifier.notify(&format!("READY=1\nSTATUS={}", daemon.summary()));
                        for reply in scans.current.drain(..) {
                            let _ = reply.send(Response::Reloaded(report.clone()));
                        }
                        scans.hup_current = false;
                    }
                    stale = !shutting_down;
                }
                Job::Preview(reply, result) => {
                    let _ = reply.send(match result {
                        Ok(planned) => Response::Plan(preview(&daemon, planned)),
                        Err(e) => Response::Error(e),
                    });
                }
                Job::Checked(outcome) => checked = Some(outcome),
                Job::GoneLogs(gone) => {
                    // Named again meanwhile: its workload writes on in them.
                    let owners = daemon.log_owners();
                    for (name, files) in gone.into_iter().filter(|(name, _)| !owners.contains(name)) {
                        files.iter().for_each(|file| drop(std::fs::remove_file(file)));
                        tracing::info!(workload = %name, "removed its logs: no workload of that name for a day");
                    }
                }
            },
            Some(change) = watch.changes.recv(), if !shutting_down => {
                if change == Change::Lost {
                    tracing::warn!("the inotify queue overflowed (fs.inotify.max_queued_events): file events were lost; rescanning everything");
                }
                if matches!(change, Change::Lost | Change::Rewatched) {
                    scans.wanted = Some(Rescan::Everything);
                }
                if debounce.is_none() { debounce = Some(tokio::time::Instant::now() + DEBOUNCE); }
            }
            _ = async { tokio::time::sleep_until(debounce.unwrap()).await }, if debounce.is_some() && !shutting_down => {
                debounce = None;
                scans.wanted = Some(scans.wanted.unwrap_or(Rescan::Changed));
            }
            _ = async { tokio::time::sleep_until(write_wait.unwrap()).await }, if write_wait.is_some() && !shutting_down => {
                write_wait = None;
                scans.wanted = Some(scans.wanted.unwrap_or(Rescan::Changed));
            }
            _ = async { tokio::time::sleep_until(gone_wait.unwrap()).await }, if gone_wait.is_some() && !shutting_down => {
                gone_wait = None;
                scans.wanted = Some(scans.wanted.unwrap_or(Rescan::Changed));
            }
            _ = async { tokio::time::sleep_until(rereads.at.unwrap()).await }, if rereads.at.is_some() && !shutting_down => {
                if let Some(kind) = rereads.due() {
                    scans.wanted = Some(scans.wanted.map_or(kind, |wanted| wanted.max(kind)));
                }
            }
            _ = resync.tick(), if !shutting_down => {
                scans.wanted = Some(Rescan::Everything);
                daemon.executor.undo_abandoned_runs();
                // Kept a day: looked for hourly, not at each resync.
                if logs_looked_at.is_none_or(|at| at.elapsed() >= GONE_LOGS_EVERY) {
                    logs_looked_at = Some(std::time::Instant::now());
                    look_for_gone_logs(&state_dir, &daemon, &job_tx);
                }
            }
            _ = async { tokio::time::sleep_until(wake.unwrap().into()).await }, if wake.is_some() => {
                daemon.on_timer(Clock::read());
                stale = !shutting_down;
            }
            _ = async { watchdog.as_mut().unwrap().tick().await }, if watchdog.is_some() => {
                let _ = notifier.notify("WATCHDOG=1");
            }
            // systemd had no room for a message: tried again until it has.
            () = tokio::time::sleep(notify::RETRY), if notifier.backlogged() => notifier.flush(),
            () = async {}, if again => stale = true,
        }
        if !scans.running
            && !shutting_down
            && let Some(rescan) = scans.wanted.take()
        {
            scans.running = true;
            scans.kind = rescan;
            scans.current.append(&mut scans.next);
            scans.hup_current |= std::mem::take(&mut scans.hup_next);
            let (dir, previous, validator, tx) =
                (workloads.clone(), daemon.snapshot().clone(), validator.clone(), job_tx.clone());
            let held = scan::Held {
                settled: daemon.claims(),
                running: daemon.running_files(),
                // Validated again on a full rescan, or when a file one was
                // refused for changes (`run_job`).
                invalid: daemon.invalid_files(),
                recorded: BTreeMap::new(),
                restored: Vec::new(),
                writes: Some(watch.writes.clone()),
                gone: scans.gone.clone(),
            };
            tokio::spawn(super::workers::blocking(move || {
                let outcome = scan::run_job(&dir, &previous, rescan, &validator, &held);
                let _ = tx.send(Job::Scan(outcome));
            }));
        }
        again = false;
        if stale && sandbox_rx.is_empty() && control.is_empty() && !shutting_down {
            stale = false;
            let report = daemon.reconcile(Clock::read());
            again = report.queued > 0 && daemon.core().starting().is_none();
            let summary = daemon.summary();
            if summary != last_status {
                let _ = notifier.notify(&format!("STATUS={summary}"));
                last_status = summary;
            }
            // A pass cut short queues the next at once; without a yield the
            // tasks that read the control socket would never run meanwhile.
            tokio::task::yield_now().await;
        }
        // The outcome of a check first: a passed one execs, serving the
        // upgrades asked meanwhile too.
        if let Some(Checked { binary, identity, config, outcome }) = checked.take() {
            let waiting = scans.checking.take().map(|c| c.waiting).unwrap_or_default();
            if shutting_down {
                // Its clients were told when the stop came (`abandon_upgrade`).
            } else if let Some(what) = Checked::changed_since(&binary, identity, &config) {
                // Replaced again while it was checked (a second package
                // upgrade), or the configuration edited: what is there now
                // is checked, whatever this said.
                tracing::info!(binary = %binary.display(), "{what} while it was checked: checking again");
                scans.want_upgrade(waiting);
            } else if let Some(message) = outcome.refusal(&binary) {
                refuse_upgrade(&mut daemon, &mut scans, waiting, message);
                again = true;
            } else {
                let waiting = waiting.into_iter().chain(scans.upgrade.take().into_iter().flatten()).collect();
                let heard = Heard { taker: &taker, channel: &mut heard, again: &requeue };
                let upgrade = Upgrade {
                    binary: &binary,
                    identity,
                    config,
                    waiting,
                    scans: &mut scans,
                    control: &mut control,
                    gate: &gate,
                    state_dir: &state_dir,
                };
                let replaced =
                    reexec(&mut daemon, &mut sandbox_rx, &handover, upgrade, start_timeout, &notifier, heard).await;
                if let Some(waiting) = replaced {
                    scans.want_upgrade(waiting);
                    again = true;
                }
            }
        }
        if !shutting_down
            && scans.checking.is_none()
            && let Some((waiting, message)) = scans.begin_check(&job_tx, &config_files)
        {
            refuse_upgrade(&mut daemon, &mut scans, waiting, message);
            again = true;
        }
        // Each pass tries what systemd had no room for (the arm above does
        // while nothing else happens: a busy loop would never let it fire).
        if notifier.backlogged() {
            notifier.flush();
        }
        if !watchers.is_empty() {
            let now = daemon.status(Clock::read());
            // A change is what status shows, but the uptimes' ticking.
            let mut seen = now.clone();
            seen.iter_mut().for_each(|w| w.uptime_seconds = None);
            let seen = serde_json::to_string(&seen).unwrap_or_default();
            watchers.retain_mut(|(watcher, last)| {
                if *last == seen {
                    return !watcher.is_closed();
                }
                *last = seen.clone();
                watcher.send(Response::Status(now.clone())).is_ok()
            });
        }
        if shutting_down {
            // A shutdown that says what it waits for, once per change.
            let left = daemon.left_to_stop(std::time::Instant::now());
            let names: Vec<&str> = left.iter().map(|l| l.split(':').next().unwrap_or("")).collect();
            if names != told.iter().map(|l| l.split(':').next().unwrap_or("")).collect::<Vec<_>>() {
                let shown = waiting_for(&left);
                if !left.is_empty() {
                    tracing::info!(left = left.len(), "stopping: {shown}");
                }
                let _ = notifier.notify(&format!("STATUS=stopping: {} left ({shown})", left.len()));
                told = left;
            }
        }
        if shutting_down && daemon.all_stopped() {
            break;
        }
    }
    // Nothing runs: every network attachment is undone before the exit,
    // and the daemon's cgroup group goes with its last workload's.
    daemon.executor.release_all_networks();
    Cgroup::remove_group(&cgroups, &group);
    notifier.settle(SETTLE_NOTIFY).await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// A timer that, after a stall (a busy loop, a paused VM), fires once,
/// not once for each tick it missed.
fn ticks(every: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Handles the sandboxes' events, and the starts' deadlines (a start that
/// misses its own is killed, as the loop would), until no workload is
/// starting: what the first READY=1, and an upgrade's hand-over, wait for.
/// Every start under way has its deadline within `start_timeout`; past
/// it, and a moment for the last kill to be heard, it gives up. The
/// watchdog is pinged meanwhile. Returns whether no workload is starting.
async fn settle(
    daemon: &mut Daemon,
    sandbox_rx: &mut mpsc::UnboundedReceiver<SandboxEvent>,
    start_timeout: Duration,
    notifier: &Notifier,
    heard: &mut mpsc::UnboundedReceiver<Signal>,
    asked: &mut Vec<Signal>,
) -> bool {
    let settled = tokio::time::Instant::now() + start_timeout + KILL_HEARD;
    let mut watchdog = notifier.watchdog_interval().map(ticks);
    loop {
        // Only the starts' own deadlines: woken for a backoff's end, which
        // only the loop's reconcile acts on, the wait would spin.
        let Some(deadline) = daemon.core().starting() else { return true };
        let wake = deadline.map(tokio::time::Instant::from_std).filter(|w| *w < settled);
        tokio::select! {
            event = sandbox_rx.recv() => match event {
                Some(event) => {
                    daemon.on_sandbox(event, Clock::read());
                }
                None => return false,
            },
            () = tokio::time::sleep_until(wake.unwrap_or(settled)) => {
                if wake.is_none() {
                    return false;
                }
                daemon.on_timer(Clock::read());
            }
            _ = async { watchdog.as_mut().unwrap().tick().await }, if watchdog.is_some() => {
                let _ = notifier.notify("WATCHDOG=1");
            }
            // A stop is not kept waiting for the starts: the upgrade is off.
            Some(signal) = heard.recv() => {
                asked.push(signal);
                if signal != Signal::SIGHUP {
                    return false;
                }
            }
        }
    }
}

/// How long after its deadline a start's kill may take to be heard.
const KILL_HEARD: Duration = Duration::from_secs(2);

/// An upgrade refused before it began (nothing paused, nothing told to
/// systemd): the clients are told why, and the daemon does what a reload
/// would have: rescans (the loop is to go round at once to begin it), and
/// says READY=1 after it (a SIGHUP said RELOADING=1); what asks again
/// tries the binary again.
fn refuse_upgrade(daemon: &mut Daemon, scans: &mut Scans, waiting: Vec<oneshot::Sender<Response>>, message: String) {
    tracing::error!(message);
    answer_all(waiting, &message);
    daemon.retry_host_failures(Clock::read());
    scans.hup_next = true;
    scans.wanted = Some(Rescan::Everything);
}

/// An upgrade whose check passed: the binary, the file it was then
/// (`upgrade::identity`), and the clients that wait.
struct Upgrade<'a> {
    binary: &'a std::path::Path,
    identity: Option<upgrade::Identity>,
    /// The configuration's files as they were checked.
    config: upgrade::ConfigFiles,
    waiting: Vec<oneshot::Sender<Response>>,
    /// The reloads waiting for a scan, answered by the exec.
    scans: &'a mut Scans,
    /// The requests queued for the loop, answered before the exec.
    control: &'a mut mpsc::UnboundedReceiver<Control>,
    /// The control socket's, closed for the exec.
    gate: &'a server::Gate,
    /// Where the runs' health is handed on (`upgrade::hand_on_runs`).
    state_dir: &'a std::path::Path,
}

/// Re-executes the upgrade's binary (which checked the configuration)
/// in place: starts under way are let finish, kept state written, the
/// clients told, then the exec; the new image adopts every sandbox. When
/// it returns, the daemon goes on as it was: the upgrade was abandoned or
/// the exec failed (its clients told, READY=1 said but when a stop came
/// in the last moment, which the loop carries out); or the binary was
/// replaced since its check, and the clients are returned, to wait for
/// the new file's.
async fn reexec(
    daemon: &mut Daemon,
    sandbox_rx: &mut mpsc::UnboundedReceiver<SandboxEvent>,
    handover: &std::os::fd::OwnedFd,
    what: Upgrade<'_>,
    start_timeout: Duration,
    notifier: &Notifier,
    heard: Heard<'_>,
) -> Option<Vec<oneshot::Sender<Response>>> {
    let Upgrade { binary, identity, config, waiting, scans, control, gate, state_dir } = what;
    let _ = notifier.notify("RELOADING=1");
    // What the loop is asked meanwhile (a stop abandons the upgrade).
    let mut asked = Vec::new();
    // A start still under way would be adopted by the new image as if
    // running, half built, with no deadline: no exec then.
    let settled = settle(daemon, sandbox_rx, start_timeout, notifier, heard.channel, &mut asked).await;
    // What the new image reads back: a hold or an end not on disk would
    // be lost (a stopped workload started again, a one-shot run twice).
    let kept = settled && daemon.store.flush(Duration::from_secs(5));
    if settled {
        // Detachments under way finish; attachments in use are recorded,
        // and the new image takes them over.
        daemon.executor.settle_networks();
        // From here no thread takes a stop or reload: each is in the
        // loop's channel, or pending, until the exec.
        heard.taker.pause();
        take_asked(heard.channel, &mut asked);
    }
    let stop = asked.iter().any(|s| *s != Signal::SIGHUP);
    let refusal = match (settled, stop) {
        (_, true) => Some(STOPPED_UPGRADE),
        (false, false) => Some("a workload is still starting, past its start_timeout: not upgraded; try again"),
        (true, false) if !kept => Some(
            "what is kept of the workloads (holds, ends, restart counts) cannot be written (the daemon's log says why: a full disk?): not upgraded, as the new daemon would not know it; try again once it can be",
        ),
        (true, false) => None,
    };
    let changed = refusal.is_none().then(|| Checked::changed_since(binary, identity, &config)).flatten();
    if let Some(what) = changed {
        // Since its check (while the starts settled): checked again.
        tracing::info!(binary = %binary.display(), "{what} while upgrading: checking again");
        for signal in asked {
            let _ = heard.again.send(signal);
        }
        heard.taker.resume();
        return Some(waiting);
    }
    if let Some(message) = refusal {
        tracing::error!(signals = ?asked, message);
        answer_all(waiting, message);
        // A stop for the loop to carry out (a reload is moot beside it).
        asked.retain(|s| !stop || *s != Signal::SIGHUP);
        for signal in asked {
            let _ = heard.again.send(signal);
        }
        heard.taker.resume();
        let _ = notifier.notify(&format!("READY=1\nSTATUS={}", daemon.summary()));
        return None;
    }
    tracing::info!(binary = %binary.display(), "upgrading in place: re-executing the binary; every workload keeps running");
    let text = format!("re-executing {}; every workload keeps running", binary.display());
    // Connections from now on wait for the next image.
    gate.close();
    let reloads = std::mem::take(&mut scans.current).into_iter().chain(std::mem::take(&mut scans.next));
    answer_before_exec(control, waiting.into_iter().chain(reloads), &text);
    notifier.settle(SETTLE_NOTIFY).await;
    // And what the connections accepted before asked meanwhile: each
    // answer reaches its client before this image is gone.
    answer_everyone_before_exec(control, gate, &text).await;
    take_asked(heard.channel, &mut asked);
    if asked.iter().any(|s| *s != Signal::SIGHUP) {
        // Asked in these last milliseconds, the client told already.
        gate.open();
        tracing::warn!(signals = ?asked, "asked to stop while upgrading: not upgraded; stopping every workload");
        asked.retain(|s| *s != Signal::SIGHUP);
        for signal in asked {
            let _ = heard.again.send(signal);
        }
        heard.taker.resume();
        return None;
    }
    // Ignored, then unblocked, for the next image: a paddock older than
    // this one never unblocks them itself, and one that comes in the
    // moment before the exec must not end the daemon (a newer image holds
    // them again, and takes them back, at once).
    signals::release();
    upgrade::hand_on_runs(state_dir, daemon.runs_to_hand_on());
    let error = upgrade::reexec(binary, handover);
    // Not to be taken by a daemon that comes later.
    let _ = upgrade::handed_runs(state_dir);
    signals::hold();
    gate.open();
    // A reload asked meanwhile is the loop's again.
    for signal in asked {
        let _ = heard.again.send(signal);
    }
    heard.taker.resume();
    tracing::error!(%error, "the upgrade failed; this daemon goes on");
    let _ = notifier.notify(&format!("READY=1\nSTATUS={}", daemon.summary()));
    None
}

/// Adds to `asked` what the loop's channel holds and what is pending
/// (the signal thread paused).
fn take_asked(channel: &mut mpsc::UnboundedReceiver<Signal>, asked: &mut Vec<Signal>) {
    while let Ok(signal) = channel.try_recv() {
        asked.push(signal);
    }
    while let Some(signal) = signals::take_pending() {
        asked.push(signal);
    }
}

/// The signals the loop heard, and the thread that takes them, for an
/// upgrade to look at before it execs.
struct Heard<'a> {
    taker: &'a signals::Taker,
    channel: &'a mut mpsc::UnboundedReceiver<Signal>,
    /// To hand the loop again what an abandoned upgrade took.
    again: &'a mpsc::UnboundedSender<Signal>,
}

/// A scan and its validation on a blocking thread, awaited.
async fn scan_now(
    dir: &Path,
    previous: &Snapshot,
    rescan: Rescan,
    validator: &Arc<Validator>,
    held: scan::Held,
) -> scan::Outcome {
    let (dir, previous, validator) = (dir.to_owned(), previous.clone(), validator.clone());
    super::workers::blocking(move || scan::run_job(&dir, &previous, rescan, &validator, &held))
        .await
        .unwrap_or_else(|e| scan::Outcome::refused(Snapshot::new(), e.to_string()))
}

/// How many of the workloads a shutdown still waits for are named in its
/// log line and `STATUS=`: each line stays short when a thousand stop at
/// once (naming them all made a shutdown's log grow with the square of
/// their number: 11.5 MB for 1000).
const STOPPING_NAMED: usize = 8;

/// The first `STOPPING_NAMED` of what a shutdown waits for, and how many more.
fn waiting_for(left: &[String]) -> String {
    let named = left.iter().take(STOPPING_NAMED).map(String::as_str).collect::<Vec<_>>().join("; ");
    match left.len().saturating_sub(STOPPING_NAMED) {
        0 => named,
        more => format!("{named}; and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_names_a_few_of_what_it_waits_for_and_counts_the_rest() {
        let few: Vec<String> = ["worker: SIGINT, 8 s", "db: after what comes after it"].map(String::from).into();
        assert_eq!(waiting_for(&few), "worker: SIGINT, 8 s; db: after what comes after it");
        assert_eq!(waiting_for(&[]), "");
        let many: Vec<String> = (0..1000).map(|i| format!("s{i:04}: SIGTERM, 10 s")).collect();
        let line = waiting_for(&many);
        assert!(line.starts_with("s0000: SIGTERM, 10 s; s0001: SIGTERM, 10 s;"), "{line}");
        assert!(line.ends_with("s0007: SIGTERM, 10 s; and 992 more"), "{line}");
        assert!(line.len() < 200, "{line}");
        let exactly: Vec<String> = many[..STOPPING_NAMED].to_vec();
        assert!(!waiting_for(&exactly).contains("more"));
    }

    /// What waits for the loop when the daemon re-executes itself is
    /// answered first (each had seen its connection closed with no
    /// answer): an upgrade's and a reload's clients are told the exec
    /// serves them, others to ask again; a scrape is left to the exec.
    #[test]
    fn what_waits_for_the_loop_is_answered_before_an_exec() {
        let (tx, mut control) = mpsc::unbounded_channel();
        let ask = |request: Request| {
            let (reply, answer) = oneshot::channel();
            tx.send(Control::Ask(request, reply)).unwrap();
            answer
        };
        let (reload, upgrade, status) =
            (ask(Request::Reload), ask(Request::Upgrade), ask(Request::Status { name: None }));
        let (exec_reply, mut exec_answer) = oneshot::channel();
        let null = || std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let exec = crate::protocol::ExecRequest {
            name: "web".into(),
            command: vec!["sh".into()],
            user: None,
            group: None,
            env: Vec::new(),
            workdir: None,
            tty: false,
        };
        tx.send(Control::Exec(exec, [null(), null(), null()], exec_reply)).unwrap();
        let (scrape, _scraped) = oneshot::channel();
        tx.send(Control::Metrics(scrape)).unwrap();
        let (waiting, mut waited) = oneshot::channel();
        let text = "re-executing /usr/bin/paddock; every workload keeps running";
        assert_eq!(answer_before_exec(&mut control, [waiting], text), 5);
        let done = |answer: Result<Response, _>| matches!(answer, Ok(Response::Done(t)) if t == text);
        assert!(done(waited.try_recv()), "the upgrade's client");
        let (mut reload, mut upgrade, mut status) = (reload, upgrade, status);
        assert!(done(reload.try_recv()) && done(upgrade.try_recv()), "served by the exec");
        assert!(matches!(status.try_recv(), Ok(Response::Error(e)) if e.contains("ask again")));
        assert!(matches!(exec_answer.try_recv(), Ok(Err(e)) if e.contains("ask again")));
        assert!(control.try_recv().is_err(), "nothing left queued");
    }
}
