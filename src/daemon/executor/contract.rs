//! What the supervisor asks of an executor (`Executor`) and what it hears
//! back (`SandboxEvent`): the seam at which unit tests put their fakes.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::attachments::{AttachError, NetworkView};
use crate::idmap::Slice;
use crate::model::{Exit, Manifest, Signal, WorkloadName};
use crate::network::Attachment;
use crate::reconcile::{Desired, StartFailure, Version};

/// What a sandbox did, reported to the event loop.
#[derive(Debug)]
pub enum SandboxEvent {
    Started {
        name: WorkloadName,
        pid: i32,
        latency: Duration,
    },
    StartFailed {
        name: WorkloadName,
        failure: StartFailure,
    },
    /// The init reported the workload's end; it is acknowledged (and the
    /// sandbox let go) once `heard` is answered, after what must be kept of
    /// this end is on disk.
    Ending {
        name: WorkloadName,
        exit: Exit,
        /// As in `Exited`.
        ended: Option<std::time::Instant>,
        heard: tokio::sync::oneshot::Sender<()>,
    },
    Exited {
        name: WorkloadName,
        exit: Exit,
        /// When the workload ended, as its init said (None: now). Long
        /// before, when it ended while no daemon ran.
        ended: Option<std::time::Instant>,
    },
    /// A workload's network is attached (or could not be): its start goes on.
    Attached {
        name: WorkloadName,
        outcome: Result<Box<Attachment>, AttachError>,
    },
    /// A health probe of the run whose init is `pid` passed or failed.
    Probed {
        name: WorkloadName,
        pid: i32,
        ok: bool,
        output: String,
    },
}

/// One start to begin.
pub struct StartRequest<'a> {
    pub name: &'a WorkloadName,
    /// Its version, manifest and the manifest file's text (for the
    /// sandbox's record).
    pub desired: &'a Desired,
    pub slice: Slice,
}

pub trait Executor {
    /// Begins a start; its outcome arrives later as an event. An error is
    /// a start that failed at once (nothing is left of it).
    fn start(&mut self, request: StartRequest<'_>) -> Result<(), StartFailure>;
    /// Sends a signal to the sandbox's init (which forwards it to the workload).
    fn signal(&mut self, name: &WorkloadName, signal: Signal);
    /// Kills every process of the sandbox.
    fn kill(&mut self, name: &WorkloadName);
    /// The sandbox has exited and been cleaned up: forget it.
    fn reap(&mut self, name: &WorkloadName);
    /// Makes a health probe of the run whose init is `pid`; its result
    /// comes back as `SandboxEvent::Probed`.
    fn probe(
        &mut self,
        _name: &WorkloadName,
        _pid: i32,
        _m: &Manifest,
        _probe: crate::model::Probe,
        _timeout: Duration,
    ) {
    }
    /// Starts a process inside the running sandbox (`paddock exec`).
    fn enter(
        &mut self,
        _name: &WorkloadName,
        _manifest: &Manifest,
        _entry: &crate::sandbox::enter::Entry,
        _tty: bool,
        _stdio: [OwnedFd; 3],
    ) -> std::io::Result<crate::sandbox::enter::Entered> {
        Err(std::io::Error::other("this executor cannot enter sandboxes"))
    }
    /// A network attachment a start waited for is made (or failed): the
    /// start goes on. An error is a start that failed.
    fn attached(
        &mut self,
        _name: &WorkloadName,
        _outcome: Result<Box<Attachment>, AttachError>,
    ) -> Result<(), StartFailure> {
        Ok(())
    }
    /// Undoes the network attachments of workloads `wanted` says no
    /// longer want one (removed, stopped, finished, or given up).
    fn release_networks(&mut self, _wanted: &dyn Fn(&WorkloadName) -> bool) {}
    /// The workload's file changed, its manifest did not
    /// (`Effect::Reworded`): its sandbox's record, where it names
    /// version `from`, names `desired` instead.
    fn reworded(&mut self, _name: &WorkloadName, _from: Version, _desired: &Desired) {}
    /// A workload's network, for status: its network, addresses and ports.
    fn network(&self, _name: &WorkloadName) -> Option<NetworkView> {
        None
    }
}
