//! The records of attachments (`STATE_DIR/networks/NAME.json`): written
//! before any plugin runs, so that whatever happens next a successor can
//! undo what was made; read back at start, forgotten when unreadable; and
//! the namespaces and `paddock run`s no record, or no process, accounts for.

use std::path::{Path, PathBuf};

use super::{Attachment, NetworkError, Networks};
use crate::model::WorkloadName;

/// How long a start that publishes ports waits for `ports.lock`.
const PORTS_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl Networks {
    /// Where a workload's attachment is recorded.
    pub(super) fn record_path(&self, workload: &WorkloadName) -> PathBuf {
        self.records.join(format!("{workload}.json"))
    }

    /// Writes a workload's record, whole or not at all.
    pub(super) fn record(&self, workload: &WorkloadName, a: &Attachment) -> Result<(), NetworkError> {
        let path = self.record_path(workload);
        let bytes = serde_json::to_vec_pretty(a).expect("an attachment serializes");
        crate::fsutil::write_atomic(&path, &bytes, 0o600).map_err(|source| NetworkError::Write { path, source })
    }

    /// Every recorded attachment, by workload (a record that cannot be
    /// read is returned as such, to be reported).
    pub fn recorded(&self) -> Vec<(WorkloadName, Result<Attachment, String>)> {
        read_records(&self.records)
    }

    /// `recorded`, but a directory that cannot be listed (out of
    /// descriptors, an I/O error) is an error, not "no record": what has
    /// no record is undone.
    pub fn recorded_checked(&self) -> std::io::Result<Vec<(WorkloadName, Result<Attachment, String>)>> {
        try_read_records(&self.records)
    }

    /// Removes the temporary files of record writes whose writer is gone: a
    /// daemon or run killed while it wrote a record leaves one for good.
    pub fn remove_abandoned_writes(&self) {
        crate::fsutil::remove_abandoned_temporaries(&self.records);
    }

    /// Who else publishes one of `ports` (the first found): the daemon's
    /// workloads and `paddock run`s keep their records apart, and neither
    /// sees the other's ports as sockets (portmap's rules are none), so
    /// each looks at the other's records; a run also at the other runs'.
    /// A run that is gone holds nothing (its leftovers are being undone).
    pub(super) fn published_elsewhere(
        &self,
        workload: &WorkloadName,
        ports: &[crate::model::PortMapping],
    ) -> Option<(crate::model::PortMapping, String)> {
        if ports.is_empty() {
            return None;
        }
        let runs = if self.runs { self.records.clone() } else { self.records.join("run") };
        let mut holders: Vec<(String, Attachment)> = Vec::new();
        if self.runs
            && let Some(daemons) = self.records.parent()
        {
            holders.extend(
                read_records(daemons).into_iter().filter_map(|(n, a)| Some((format!("the workload {n}"), a.ok()?))),
            );
        }
        holders.extend(read_records(&runs).into_iter().filter_map(|(n, a)| {
            let pid = n.as_str().strip_prefix("run")?.split('-').next()?.to_owned();
            (!(run_gone(&n) || self.runs && n == *workload)).then_some((format!("`paddock run` (pid {pid})"), a.ok()?))
        }));
        ports.iter().find_map(|port| {
            holders.iter().find(|(_, a)| a.ports.iter().any(|p| p.collides_with(port))).map(|(h, _)| (*port, h.clone()))
        })
    }

    /// The lock (`STATE_DIR/networks/ports.lock`, the daemon's and every
    /// run's) held from the check that no one else publishes a port
    /// (`published_elsewhere`) to the record that says this attachment
    /// does: two starts at one instant, a workload's and a `paddock run`'s
    /// or two runs', cannot both pass the check.
    /// Waited for `PORTS_LOCK_PATIENCE` at most: its holder may be a run
    /// stopped (Ctrl-Z) between the two, and no start waits on it for good.
    pub(super) fn lock_ports(&self) -> Result<nix::fcntl::Flock<std::fs::File>, NetworkError> {
        let (path, locked) = self.shared_lock("ports.lock");
        match locked {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(NetworkError::PortsLocked { path }),
            Err(source) => Err(NetworkError::Write { path, source }),
        }
    }

    /// The daemon's and every run's lock `name` in the daemon's records
    /// directory, waited for `PORTS_LOCK_PATIENCE` at most (None when
    /// another holds it that long); and its path.
    fn shared_lock(&self, name: &str) -> (PathBuf, std::io::Result<Option<nix::fcntl::Flock<std::fs::File>>>) {
        let daemons = if self.runs { self.records.parent().unwrap_or(&self.records) } else { &self.records };
        let path = daemons.join(name);
        let every = std::time::Duration::from_millis(20);
        let locked = crate::fsutil::lock_within(&path, PORTS_LOCK_PATIENCE, every, || {});
        (path, locked)
    }

    /// The lock (`STATE_DIR/networks/localnet.lock`, the daemon's and
    /// every run's) held while the rules against the host's loopback are
    /// looked for and added or removed (`localnet`): two attachments made
    /// at one instant would each find no rule for the bridge and each add
    /// one. Waited for `PORTS_LOCK_PATIENCE` at most.
    pub(super) fn lock_localnet(&self) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
        let (path, locked) = self.shared_lock("localnet.lock");
        match locked {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(format!(
                "the rules against the host's loopback (route_localnet) cannot be looked for: {} is held by another process",
                path.display()
            )),
            Err(e) => Err(format!("the rules against the host's loopback (route_localnet): {}: {e}", path.display())),
        }
    }

    /// Forgets a record that cannot be read (its attachment cannot be
    /// undone by paddock: the caller says so).
    pub fn drop_record(&self, workload: &WorkloadName) {
        let _ = std::fs::remove_file(self.record_path(workload));
    }

    /// Namespace mount points under RUN_DIR/netns with no record: a
    /// daemon died between making one and recording it.
    pub fn stray_namespaces(&self, recorded: &[WorkloadName]) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.run_dir.join("netns")) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| !recorded.iter().any(|r| e.file_name().to_str() == Some(r.as_str())))
            .map(|e| e.path())
            .collect()
    }

    /// The attachments of `paddock run`s that are gone (`run_gone`; a run
    /// that ended normally undid its own), undone now. For `for_runs()`
    /// networks.
    pub fn undo_abandoned_runs(&self) -> Vec<(WorkloadName, Result<(), NetworkError>)> {
        self.undo_gone_runs(|_| true)
    }

    /// Those of them that `wanted` picks (an unreadable record is always
    /// forgotten), one caller at a time in this process: the daemon's
    /// rescans and its starts both undo them.
    pub(super) fn undo_gone_runs(
        &self,
        wanted: impl Fn(&Attachment) -> bool,
    ) -> Vec<(WorkloadName, Result<(), NetworkError>)> {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.remove_abandoned_writes();
        // Records that cannot be listed are not "none": every gone run's
        // namespace would look unrecorded, and go before its DEL.
        let Ok(recorded) = self.recorded_checked() else { return Vec::new() };
        // A namespace its run made and was killed before recording: no
        // record names it, so nothing else would remove it. (One a record
        // names is undone with it, its plugins' DEL run in it first.)
        if self.runs {
            let named: Vec<PathBuf> = recorded
                .iter()
                .map(|(name, read)| read.as_ref().map_or_else(|_| self.netns_path(name), |a| a.netns.clone()))
                .collect();
            for stray in self.stray_namespaces(&[]).into_iter().filter(|p| !named.contains(p)) {
                let run = stray.file_name().and_then(|n| n.to_str()).and_then(|n| WorkloadName::try_from(n).ok());
                if run.as_ref().is_some_and(run_gone) {
                    crate::sandbox::netns::remove(&stray);
                }
            }
        }
        recorded
            .into_iter()
            .filter(|(name, read)| run_gone(name) && read.as_ref().map_or(true, &wanted))
            .map(|(name, read)| {
                let undone = match read {
                    Ok(mut a) => self.detach(&name, &mut a),
                    Err(e) => {
                        self.drop_record(&name);
                        Err(NetworkError::Unreadable(e))
                    }
                };
                (name, undone)
            })
            .collect()
    }
}

/// The records in `dir`, by workload (one that cannot be read is returned
/// as such, to be reported).
fn read_records(dir: &Path) -> Vec<(WorkloadName, Result<Attachment, String>)> {
    try_read_records(dir).unwrap_or_default()
}

/// `read_records`; a directory that is not there has none.
fn try_read_records(dir: &Path) -> std::io::Result<Vec<(WorkloadName, Result<Attachment, String>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let Ok(name) = WorkloadName::try_from(stem) else { continue };
        let read = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Attachment>(&b).map_err(|e| e.to_string()));
        found.push((name, read));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Whether the `paddock run` a record is named after (`run<PID>-<START>`,
/// its pid and start time) is gone. A pid alone is not enough: one reused
/// (or after a reboot) would keep a dead run's attachment for as long as
/// the new process lives. Records of older paddocks (`run<PID>`) are
/// judged by the pid. Not a run's record: false.
fn run_gone(name: &WorkloadName) -> bool {
    let Some(run) = name.as_str().strip_prefix("run") else { return false };
    let (pid, started) = match run.split_once('-') {
        Some((pid, started)) => (pid, started.parse::<u64>().ok()),
        None => (run, None),
    };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    match started {
        // What cannot be told counts as running: a run's network is not
        // undone for a moment's error reading /proc.
        Some(started) => crate::sandbox::process::has_ended(pid as u32, started),
        None => !Path::new(&format!("/proc/{pid}")).exists(),
    }
}
