//! Any bytes on the control socket: each line is parsed as a request, as
//! the daemon does, and answered by the real supervisor (with an executor
//! and a store that only record), whose answer must serialize and parse
//! back as the client reads it. Nothing may panic.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use paddock::daemon::executor::{Executor, StartRequest};
use paddock::daemon::kept::Kept;
use paddock::daemon::scan::{FileChange, Outcome, Snapshot};
use paddock::daemon::store::Store;
use paddock::daemon::supervisor::{Answered, Supervisor};
use paddock::idmap::{IdRange, Slice};
use paddock::model::{Signal, WorkloadName};
use paddock::protocol::{MAX_REQUEST, Request, Response};
use paddock::reconcile::{Clock, ManifestEvent, StartFailure, Version};

struct Nothing;

impl Executor for Nothing {
    fn start(&mut self, _: StartRequest<'_>) -> Result<(), StartFailure> {
        Ok(())
    }
    fn signal(&mut self, _: &WorkloadName, _: Signal) {}
    fn kill(&mut self, _: &WorkloadName) {}
    fn reap(&mut self, _: &WorkloadName) {}
}

#[derive(Default)]
struct Memory(BTreeMap<WorkloadName, Slice>);

impl Store for Memory {
    fn slices(&mut self, names: &[&WorkloadName]) -> BTreeMap<WorkloadName, Result<Slice, StartFailure>> {
        let range = IdRange { start: 100_000, count: 65536 };
        names.iter().map(|n| ((*n).clone(), Ok(Slice { uid: range, gid: range }))).collect()
    }
    fn slice(&self, name: &WorkloadName) -> Option<Slice> {
        self.0.get(name).copied()
    }
    fn keep(&mut self, _: &WorkloadName, _: &Kept) -> std::io::Result<()> {
        Ok(())
    }
    fn forget(&mut self, _: &WorkloadName) -> std::io::Result<()> {
        Ok(())
    }
    fn slice_counts(&self) -> (usize, usize) {
        (0, 1)
    }
}

fn supervisor() -> Supervisor<Nothing, Memory> {
    let mut sup = Supervisor::new(Nothing, Memory::default(), PathBuf::from("/wl"), PathBuf::from("/state"), 1);
    let at = Clock::read();
    let manifest = Arc::new(toml::from_str("command = [\"/bin/true\"]").unwrap());
    let changes = ["web", "db"]
        .iter()
        .map(|n| FileChange {
            file: format!("{n}.toml"),
            name: Some(WorkloadName::try_from(*n).unwrap()),
            event: ManifestEvent::Valid { version: Version(1), manifest: Arc::clone(&manifest) },
        })
        .collect();
    sup.apply(Outcome { snapshot: Snapshot::new(), changes, refused: None }, at);
    sup.reconcile(at);
    sup
}

fuzz_target!(|data: &[u8]| {
    let mut sup = supervisor();
    for line in data.split(|b| *b == b'\n') {
        if line.len() > MAX_REQUEST {
            continue;
        }
        let Ok(request) = serde_json::from_slice::<Request>(line) else { continue };
        let response = match sup.answer(request, Clock::read()) {
            Answered::Now(response, _) => response,
            Answered::Reload | Answered::Plan(_) | Answered::Upgrade => continue,
        };
        let wire = serde_json::to_vec(&response).expect("an answer serializes");
        let read: Response = serde_json::from_slice(&wire).expect("the client reads what the daemon wrote");
        assert_eq!(read, response);
        let _ = sup.metrics();
    }
});
