//! The executor's network side: each workload's network attachment, made
//! and undone on worker threads (the CNI plugins take a while), reused by
//! a restart with the same network settings, and undone once its workload
//! no longer wants it; what status shows of each; and the attachments a
//! predecessor recorded, taken over at start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::SandboxEvent;
use crate::daemon::workers::Workers;
use crate::model::{Manifest, WorkloadName};
use crate::network::{Attachment, NetworkError, Networks};
use crate::reconcile::Blame;

/// Why a network could not be attached, and whose the failure is: one
/// the operator must mend (a missing plugin, an unknown network) fails the
/// workload at once; one that may pass (a plugin that failed or timed
/// out, say two of them racing to make the host's shared chains) counts
/// as a failed start, retried with the workload's backoff.
#[derive(Debug)]
pub struct AttachError {
    pub message: String,
    pub blame: Blame,
}

impl From<NetworkError> for AttachError {
    fn from(e: NetworkError) -> Self {
        let blame = if e.needs_the_operator() {
            Blame::Host
        } else if e.host_exhausted() {
            // Out of processes or descriptors: not the workload's doing.
            Blame::Daemon
        } else {
            Blame::Workload
        };
        AttachError { message: e.to_string(), blame }
    }
}

/// What status shows of a workload's network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkView {
    pub network: String,
    pub addresses: Vec<String>,
    pub ports: Vec<String>,
}

/// A workload's network attachment, guarded: whoever attaches or detaches
/// it (on a thread of its own; the plugins take a while) holds the lock,
/// so the operations on one workload's network never overlap.
type Slot = Arc<Mutex<Option<Attachment>>>;

/// Threads that make and undo network attachments: the plugins mostly
/// wait on the kernel and the xtables lock, so a few are enough.
const NETWORK_WORKERS: usize = 4;

/// Where a start stands with its workload's network.
pub(super) enum Prepared {
    /// The manifest wants no attachment.
    NoNetwork,
    /// The attachment it had, as it is: the start goes on in it now.
    Ready(Box<Attachment>),
    /// An attachment is being made: the start goes on when `Attached` comes back.
    Underway,
}

pub(super) struct Attachments {
    networks: Arc<Networks>,
    events: mpsc::UnboundedSender<SandboxEvent>,
    /// One slot per workload that has (or had) an attachment, kept for the
    /// daemon's life: a start and a detachment of the same workload lock
    /// the same mutex, so they never run at once on its paths.
    slots: BTreeMap<WorkloadName, Slot>,
    /// Detachments queued, by the container id they undo.
    detaching: BTreeMap<WorkloadName, String>,
    /// Detachments that failed (a plugin's DEL): tried again, on a later
    /// pass, once their delay is over.
    retries: Arc<Mutex<BTreeMap<WorkloadName, Retry>>>,
    /// What status shows of each attachment (kept apart from the slots,
    /// which a thread may hold for a while).
    views: BTreeMap<WorkloadName, NetworkView>,
    /// Where attachments are made and undone, off the event loop.
    workers: Workers,
    /// Whether attachments may be released: not before the first scan has
    /// said which workloads exist (a recorded attachment is reused by a
    /// workload that starts again with the same network settings).
    releasing: bool,
    /// Killed `paddock run`s' networks: whether an undoing is queued or
    /// under way (one at a time), and the runs whose failure was said
    /// (said once, not at every rescan).
    runs_undoing: Arc<std::sync::atomic::AtomicBool>,
    runs_failed: Arc<Mutex<std::collections::BTreeSet<WorkloadName>>>,
    /// The workloads whose last start wanted no network (an edit to
    /// `network = "private"`): the attachment a former version had is
    /// released though the workload runs.
    off_network: std::collections::BTreeSet<WorkloadName>,
}

impl Attachments {
    pub(super) fn new(networks: Arc<Networks>, events: mpsc::UnboundedSender<SandboxEvent>) -> Self {
        Attachments {
            networks,
            events,
            slots: BTreeMap::new(),
            detaching: BTreeMap::new(),
            retries: Arc::default(),
            views: BTreeMap::new(),
            workers: Workers::new(NETWORK_WORKERS),
            releasing: false,
            runs_undoing: Arc::default(),
            runs_failed: Arc::default(),
            off_network: std::collections::BTreeSet::new(),
        }
    }

    /// The network a start of `name` with `manifest` runs in: none, the
    /// attachment it had, or a new one (the old one undone first), made
    /// on a thread and reported as `SandboxEvent::Attached`.
    pub(super) fn prepare(&mut self, name: &WorkloadName, manifest: &Manifest) -> Prepared {
        let networks = self.networks.clone();
        if manifest.namespaces.network.cni().is_none() {
            // What a former version had is not its network any more.
            self.views.remove(name);
            if self.slots.contains_key(name) {
                self.off_network.insert(name.clone());
            }
            return Prepared::NoNetwork;
        }
        self.off_network.remove(name);
        let slot = self.slots.entry(name.clone()).or_default().clone();
        // A restart in the namespace it had: nothing to wait for. (One a
        // release is queued for is marked undoing, and never reused: the
        // release would undo it under the new run.)
        if let Ok(guard) = slot.try_lock()
            && let Some(a) = guard.as_ref().filter(|a| reusable(a, networks.fits(name, manifest, a)))
        {
            let a = a.clone();
            self.made(name, &a);
            return Prepared::Ready(Box::new(a));
        }
        // A new attachment (the old one undone first), on a thread.
        self.views.remove(name);
        let (events, name, manifest, retries) =
            (self.events.clone(), name.clone(), manifest.clone(), self.retries.clone());
        self.workers.submit(move || {
            let mut guard = lock(&slot);
            let outcome = match guard.take() {
                Some(a) if reusable(&a, networks.fits(&name, &manifest, &a)) => Ok(a),
                Some(mut old) => {
                    match networks.detach(&name, &mut old).inspect(|()| drop(lock(&retries).remove(&name))) {
                        // Its record would be overwritten by the new one: what
                        // the old one made is undone first, or nothing is made.
                        Err(e) => {
                            *guard = Some(old);
                            Err(AttachError {
                                message: format!("undoing its previous network attachment: {e}"),
                                blame: Blame::Workload,
                            })
                        }
                        Ok(()) => attach(&networks, &name, &manifest, &mut guard),
                    }
                }
                None => attach(&networks, &name, &manifest, &mut guard),
            };
            if guard.is_none() || outcome.is_ok() {
                *guard = outcome.as_ref().ok().cloned();
            }
            drop(guard);
            let _ = events.send(SandboxEvent::Attached { name, outcome: outcome.map(Box::new) });
        });
        Prepared::Underway
    }

    /// A start's attachment is made: status shows it from now on.
    pub(super) fn made(&mut self, name: &WorkloadName, attachment: &Attachment) {
        self.views.insert(name.clone(), view(attachment));
    }

    /// Undoes, on a thread, the attachments of the workloads `unwanted`
    /// names (once releasing has begun).
    pub(super) fn release(&mut self, unwanted: impl Fn(&WorkloadName) -> bool) {
        if !self.releasing {
            return;
        }
        let unwanted: Vec<(WorkloadName, Slot)> = self
            .slots
            .iter()
            .filter(|(n, _)| unwanted(n) || self.off_network.contains(*n))
            .map(|(n, slot)| (n.clone(), slot.clone()))
            .collect();
        for (name, slot) in unwanted {
            // A slot in use (an attachment being made or undone) is looked
            // at again on a later pass.
            let Ok(mut guard) = slot.try_lock() else { continue };
            let Some(a) = guard.as_mut() else {
                self.detaching.remove(&name);
                self.off_network.remove(&name);
                continue;
            };
            let id = a.container_id.clone();
            // Queued already, or failed and not yet due again.
            if self.detaching.get(&name) == Some(&id) && !lock(&self.retries).get(&name).is_some_and(|r| r.due(&id)) {
                continue;
            }
            // From now on it is being undone: a start before the release
            // runs makes a new attachment (`reusable`).
            a.undoing = true;
            drop(guard);
            self.detaching.insert(name.clone(), id.clone());
            self.views.remove(&name);
            let (networks, retries) = (self.networks.clone(), self.retries.clone());
            self.workers.submit(move || {
                let mut guard = lock(&slot);
                // Only what it was queued for: a start that came meanwhile
                // may have reused or replaced it.
                if guard.as_ref().is_none_or(|a| a.container_id != id) {
                    return;
                }
                let Some(mut a) = guard.take() else { return };
                match networks.detach(&name, &mut a) {
                    Ok(()) => {
                        lock(&retries).remove(&name);
                        tracing::info!(workload = %name, network = %a.network, "network detached");
                    }
                    Err(e) => {
                        let mut retries = lock(&retries);
                        let delay = retries.get(&name).filter(|r| r.id == id).map_or(FIRST_RETRY, |r| r.delay * 2);
                        let delay = delay.min(LAST_RETRY);
                        tracing::error!(workload = %name, error = %e, retry_in = ?delay, "cannot undo its network attachment; tried again later (and by the next daemon to start)");
                        retries.insert(name, Retry { id, at: Instant::now() + delay, delay });
                        *guard = Some(a);
                    }
                }
            });
        }
    }

    pub(super) fn view(&self, name: &WorkloadName) -> Option<NetworkView> {
        self.views.get(name).cloned()
    }

    /// The attachments a predecessor recorded: each is this daemon's again,
    /// reused by its workload if it starts with the same network settings,
    /// undone otherwise once the first scan has said what is wanted. An
    /// unreadable record, and a namespace with no record, are undone now.
    pub(super) fn restore(&mut self) {
        self.undo_abandoned_runs();
        let networks = self.networks.clone();
        networks.remove_abandoned_writes();
        let recorded = match networks.recorded_checked() {
            Ok(recorded) => recorded,
            Err(e) => {
                // Every namespace would be a stray: none is removed.
                tracing::error!(error = %e, "cannot read the network records: the workloads' networks are not taken over (a restart of the daemon tries again), and no namespace is removed");
                return;
            }
        };
        let names: Vec<WorkloadName> = recorded.iter().map(|(n, _)| n.clone()).collect();
        for stray in networks.stray_namespaces(&names) {
            tracing::warn!(netns = %stray.display(), "removing a network namespace no record accounts for");
            crate::sandbox::netns::remove(&stray);
        }
        for (name, read) in recorded {
            match read {
                Ok(a) => {
                    if a.result.is_some() {
                        self.views.insert(name.clone(), view(&a));
                    }
                    self.slots.insert(name, Arc::new(Mutex::new(Some(a))));
                }
                Err(e) => {
                    tracing::error!(workload = %name, error = %e, "an unreadable network record: what it attached cannot be undone by paddock (its address may stay allocated)");
                    networks.drop_record(&name);
                }
            }
        }
    }

    /// Undoes, on a thread, what `paddock run`s that were killed left
    /// (their namespaces, addresses and published ports' rules), as the
    /// next networked run would: at the daemon's start and at each rescan.
    pub(super) fn undo_abandoned_runs(&mut self) {
        use std::sync::atomic::Ordering;
        // The records are read on the worker, not on the event loop.
        if self.runs_undoing.swap(true, Ordering::AcqRel) {
            return;
        }
        let runs = (*self.networks).clone().for_runs();
        let (undoing, failed) = (self.runs_undoing.clone(), self.runs_failed.clone());
        self.workers.submit(move || {
            for (run, undone) in runs.undo_abandoned_runs() {
                match undone {
                    Ok(()) => {
                        lock(&failed).remove(&run);
                        tracing::info!(run = %run, "undid the network of a `paddock run` that was killed");
                    }
                    Err(e) if lock(&failed).insert(run.clone()) => {
                        tracing::warn!(run = %run, error = %e, "cannot undo the network of a `paddock run` that was killed; tried again at each rescan");
                    }
                    Err(e) => tracing::debug!(run = %run, error = %e, "cannot undo the network of a `paddock run` that was killed"),
                }
            }
            undoing.store(false, Ordering::Release);
        });
    }

    /// From now on, attachments no workload wants are undone.
    pub(super) fn release_from_now_on(&mut self) {
        self.releasing = true;
    }

    /// Waits for the attachments and detachments under way.
    pub(super) fn settle(&mut self) {
        self.workers.settle();
    }

    /// At the daemon's exit, nothing running: every attachment undone,
    /// those in use a moment ago (once their work is done) and those whose
    /// undoing failed and is not due again yet included; waited for. What
    /// fails still stays recorded, for the next daemon.
    pub(super) fn release_all(&mut self) {
        self.workers.settle();
        lock(&self.retries).clear();
        self.detaching.clear();
        self.release(|_| true);
        self.workers.settle();
    }
}

/// A detachment that failed, tried again from `at` on.
#[derive(Debug)]
struct Retry {
    /// The attachment's container id: a newer attachment starts afresh.
    id: String,
    at: Instant,
    delay: Duration,
}

impl Retry {
    fn due(&self, id: &str) -> bool {
        self.id == id && Instant::now() >= self.at
    }
}

/// The first delay before a failed detachment is tried again; it doubles
/// up to the last.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes an attachment. One whose failed ADD could not be undone is kept
/// in `slot` (as its record is), so that it is undone before the next one
/// is made, or once its workload goes.
fn attach(
    networks: &Networks,
    name: &WorkloadName,
    manifest: &Manifest,
    slot: &mut Option<Attachment>,
) -> Result<Attachment, AttachError> {
    networks.attach(name, manifest).map_err(|mut e| {
        if let Some(leftover) = e.take_leftover() {
            *slot = Some(leftover);
        }
        AttachError::from(e)
    })
}

/// Whether an attachment can take a start with these settings as it is.
/// `fits`: it was made for what the workload wants now (`Networks::fits`).
fn reusable(a: &Attachment, fits: bool) -> bool {
    fits && a.result.is_some() && !a.undoing && crate::sandbox::netns::exists(&a.netns)
}

fn view(a: &Attachment) -> NetworkView {
    NetworkView {
        network: a.network.clone(),
        addresses: a.addresses(),
        ports: a.ports.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::cni::CniError;
    use crate::sandbox::netns::NetnsError;

    /// Records that cannot be listed are not "no record": every workload's
    /// namespace would be a stray, and removed.
    #[test]
    fn network_records_that_cannot_be_listed_leave_every_namespace() {
        let (state, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Not a directory: listing it fails, as it does out of descriptors.
        std::fs::write(state.path().join("networks"), "").unwrap();
        std::fs::create_dir(run.path().join("netns")).unwrap();
        let web = run.path().join("netns/web");
        std::fs::write(&web, "").unwrap();
        let networks = Networks::load(&crate::config::NetworkConfig::default(), state.path(), run.path()).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        Attachments::new(Arc::new(networks), tx).restore();
        assert!(web.exists(), "web's namespace was taken for a stray");
        // Listed, with no record for it: a stray, removed.
        std::fs::remove_file(state.path().join("networks")).unwrap();
        let networks = Networks::load(&crate::config::NetworkConfig::default(), state.path(), run.path()).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        Attachments::new(Arc::new(networks), tx).restore();
        assert!(!web.exists());
    }

    #[test]
    fn a_host_out_of_processes_is_the_daemons_failure_on_the_network_path_too() {
        let run = |errno| {
            NetworkError::Cni(CniError::Run {
                plugin: "bridge".into(),
                source: std::io::Error::from_raw_os_error(errno),
            })
        };
        for errno in [libc::EAGAIN, libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            assert_eq!(AttachError::from(run(errno)).blame, Blame::Daemon, "{errno}");
            let thread = NetworkError::Netns(NetnsError::Thread(std::io::Error::from_raw_os_error(errno)));
            assert_eq!(AttachError::from(thread).blame, Blame::Daemon, "{errno}");
        }
        // A full disk for the attachment's record, likewise.
        let full =
            NetworkError::Write { path: "/run/x".into(), source: std::io::Error::from_raw_os_error(libc::ENOSPC) };
        assert_eq!(AttachError::from(full).blame, Blame::Daemon);
        // A plugin that could not be run for another reason, or that failed, may pass: the workload's.
        assert_eq!(AttachError::from(run(libc::EACCES)).blame, Blame::Workload);
        let failed =
            NetworkError::Cni(CniError::Failed { plugin: "bridge".into(), command: "ADD", message: "x".into() });
        assert_eq!(AttachError::from(failed).blame, Blame::Workload);
    }

    #[test]
    fn what_could_not_be_undone_is_blamed_as_its_cause_is() {
        let not_undone = |error| {
            NetworkError::NotUndone(Box::new(crate::network::NotUndone {
                error,
                undo: CniError::Failed { plugin: "bridge".into(), command: "DEL", message: "stuck".into() },
                leftover: None,
            }))
        };
        let port: crate::model::PortMapping = "[::1]:8080:80".parse().unwrap();
        let family = not_undone(NetworkError::PortFamily { port, network: "lan".into() });
        assert_eq!(AttachError::from(family).blame, Blame::Host, "the operator's to mend, undone or not");
        let failed = CniError::Failed { plugin: "bridge".into(), command: "ADD", message: "x".into() };
        assert_eq!(AttachError::from(not_undone(NetworkError::Cni(failed))).blame, Blame::Workload);
    }
}
