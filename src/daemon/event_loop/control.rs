//! The loop's side of the control socket: each request is answered by
//! the supervisor on the loop, or handed on (a reload to the next scan, an
//! upgrade to the loop, `paddock plan`'s validation to a blocking thread,
//! whose outcome the core then previews).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Daemon, Job, Scans};
use crate::daemon::notify::Notifier;
use crate::daemon::scan::{self, Rescan};
use crate::daemon::server::Control;
use crate::daemon::supervisor::Answered;
use crate::daemon::upgrade;
use crate::model::WorkloadName;
use crate::protocol::{Report, Response};
use crate::reconcile::{Clock, File, ManifestEvent};
use crate::validate::Validator;

/// What answering a request needs besides the supervisor.
pub(super) struct Context<'a> {
    pub(super) validator: &'a Arc<Validator>,
    pub(super) jobs: &'a mpsc::UnboundedSender<Job>,
    pub(super) workloads: &'a Path,
    pub(super) notifier: &'a Notifier,
    pub(super) config_files: &'a upgrade::ConfigFiles,
}

/// The metrics as last rendered by the event loop, answered again for
/// `REUSE`: however many clients ask, the loop renders them at most ten
/// times a second (each rendering walks every workload).
struct Rendered {
    at: Option<std::time::Instant>,
    text: String,
}

impl Rendered {
    const REUSE: std::time::Duration = std::time::Duration::from_millis(100);

    fn get(&self, now: std::time::Instant) -> Option<String> {
        self.at.filter(|at| now.saturating_duration_since(*at) < Self::REUSE).map(|_| self.text.clone())
    }

    fn put(&mut self, now: std::time::Instant, text: &str) {
        self.at = Some(now);
        text.clone_into(&mut self.text);
    }
}

static RENDERED: std::sync::Mutex<Rendered> = std::sync::Mutex::new(Rendered { at: None, text: String::new() });

/// Answers a request; returns whether what should run may have changed.
pub(super) fn answer(
    control: Control,
    daemon: &mut Daemon,
    scans: &mut Scans,
    shutting_down: bool,
    cx: &Context<'_>,
) -> bool {
    let Context { validator, jobs, workloads, notifier, config_files } = *cx;
    let (request, reply) = match control {
        Control::Metrics(reply) => {
            let now = std::time::Instant::now();
            let mut rendered = RENDERED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let text = rendered.get(now).unwrap_or_else(|| {
                let text = daemon.metrics();
                rendered.put(now, &text);
                text
            });
            let _ = reply.send(text);
            return false;
        }
        Control::Ask(request, reply) => (request, reply),
        // Kept by the loop itself (see `serve`).
        Control::Watch(_) => return false,
        Control::Exec(request, stdio, reply) => {
            let entered = match shutting_down {
                true => Err("the daemon is shutting down".to_owned()),
                false => daemon.exec(&request, stdio),
            };
            let _ = reply.send(entered);
            return false;
        }
    };
    if shutting_down {
        let _ = reply.send(Response::Error("the daemon is shutting down".to_owned()));
        return false;
    }
    match daemon.answer(request, Clock::read()) {
        Answered::Now(response, changed) => {
            let _ = reply.send(response);
            changed
        }
        Answered::Reload if let Some(why) = upgrade::reload_reexecutes(config_files) => {
            // `systemctl reload paddock` after a package upgrade, or an edit
            // of paddock.toml: the new binary, or configuration, taken.
            tracing::info!("reload asked: {why}; re-executing the daemon, workloads keep running");
            scans.want_upgrade(Some(reply));
            false
        }
        Answered::Reload => {
            tracing::info!("reload asked on the control socket: rescanning");
            let _ = notifier.notify("RELOADING=1");
            daemon.retry_host_failures(Clock::read());
            // Served by a scan that starts after this request.
            scans.next.push(reply);
            scans.wanted = Some(Rescan::Everything);
            false
        }
        Answered::Upgrade => {
            scans.want_upgrade(Some(reply));
            false
        }
        Answered::Plan(dir) => {
            let dir = dir.map_or_else(|| workloads.to_owned(), PathBuf::from);
            let (validator, jobs, workloads) = (validator.clone(), jobs.clone(), workloads.to_owned());
            // What a reload would hold against the files (`scan::Held`),
            // and the files the daemon read last.
            let held = scan::Held {
                settled: daemon.claims(),
                running: daemon.running_files(),
                invalid: daemon.invalid_files(),
                ..Default::default()
            };
            let current = daemon.snapshot().clone();
            tokio::spawn(crate::daemon::workers::blocking(move || {
                // The daemon's own directory, however it is spelled: a file
                // it has and finds gone is waited for, as a rescan waits
                // (`scan_settled`).
                let known = if same_dir(&dir, &workloads) { current.clone() } else { Default::default() };
                let _ = jobs.send(Job::Preview(reply, preview_scan(&dir, &known, &current, &held, &validator)));
            }));
            false
        }
    }
}

/// Whether `a` and `b` name one directory, however they are spelled.
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || std::fs::canonicalize(a).is_ok_and(|a| std::fs::canonicalize(b).is_ok_and(|b| a == b))
}

/// Validates the files of `dir` as a reload would (blocking): a valid
/// file whose text is the one the daemon read last (`current`) is no
/// change and keeps what it holds; an invalid one is validated again (the
/// host may have made it valid); a workload whose file is invalid there
/// runs on with the version it has, holding its ports and its place in
/// the start order.
fn preview_scan(
    dir: &Path,
    known: &scan::Snapshot,
    current: &scan::Snapshot,
    held: &scan::Held,
    validator: &Validator,
) -> Result<Preview, String> {
    // As the daemon refuses it: nothing of it would be applied.
    scan::check_directory(dir)
        .map_err(|e| format!("{e}; as the workloads directory, nothing of it would be applied"))?;
    let known: std::collections::BTreeSet<&str> = known.keys().map(String::as_str).collect();
    let snapshot = scan::scan_settled(dir, &known, None).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let changed = scan::changed(current, &snapshot);
    let (changed, unchanged): (Vec<&String>, Vec<&String>) =
        snapshot.keys().partition(|file| changed.contains(&file.as_str()) || held.invalid.contains_key(*file));
    let mut changes: Vec<scan::FileChange> =
        changed.into_iter().map(|file| scan::FileChange::of(dir, file, &snapshot, validator)).collect();
    // A workload without a file there is removed (its claims go with it).
    let settled: Vec<_> = held.settled.iter().filter(|(file, _)| snapshot.contains_key(file)).cloned().collect();
    scan::refuse_conflicts(dir, &snapshot, &mut changes, &settled, &held.running, &BTreeMap::new(), validator);
    let mut preview = Preview::default();
    for change in changes {
        if let ManifestEvent::Invalid(problems) = &change.event {
            preview.invalid.push(problems.clone());
        }
        if let (ManifestEvent::Valid(_), Some(warnings)) = (&change.event, change.warnings) {
            preview.warnings.push(warnings);
        }
        if let Some(name) = change.name {
            preview.events.insert(name, change.event);
        }
    }
    preview.unchanged = unchanged
        .into_iter()
        .filter_map(|file| WorkloadName::stem_of_manifest_file(file).and_then(|s| WorkloadName::try_from(s).ok()))
        .collect();
    Ok(preview)
}

/// What a planned directory holds, as the daemon would take it.
#[derive(Debug, Default)]
pub(super) struct Preview {
    /// The files that differ from what the daemon has, by workload.
    events: BTreeMap<WorkloadName, ManifestEvent>,
    /// Their problems, as rendered.
    invalid: Vec<String>,
    /// The valid ones' warnings, as rendered.
    warnings: Vec<String>,
    /// The workloads whose file is the one the daemon has.
    unchanged: Vec<WorkloadName>,
}

/// `paddock plan`: what the core would do with those manifests.
pub(super) fn preview(daemon: &Daemon, preview: Preview) -> Report {
    let Preview { mut events, invalid, warnings: file_warnings, unchanged } = preview;
    // An unchanged valid file is what the daemon made of it, as a reload leaves it.
    for name in unchanged {
        if let Some(w) = daemon.core().get(&name)
            && let (File::Valid, Some(d)) = (&w.file, &w.desired)
        {
            events.insert(name, ManifestEvent::Valid(d.clone()));
        }
    }
    // What this host cannot give a valid manifest, said before it fails.
    let mut warnings = file_warnings;
    for (name, event) in &events {
        if let ManifestEvent::Valid(desired) = event {
            let r = &desired.manifest.resources;
            let limits =
                crate::sandbox::cgroup::Limits { memory: r.memory.map(|s| s.bytes()), pids: r.pids, cpu: r.cpu };
            warnings.extend(daemon.executor.cgroups().lacks(&limits).iter().map(|lack| format!("{name}.toml: {lack}")));
        }
    }
    let actions = daemon.core().preview(events, Clock::read());
    Report {
        actions: actions
            .into_iter()
            .map(|a| crate::protocol::PlannedAction {
                verb: a.verb,
                name: a.name.to_string(),
                why: a.cause.to_string(),
            })
            .collect(),
        invalid,
        queued: 0,
        warnings,
        refused: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_rendered_again_only_after_a_tenth_of_a_second() {
        let start = std::time::Instant::now();
        let mut rendered = Rendered { at: None, text: String::new() };
        assert_eq!(rendered.get(start), None, "nothing rendered yet");
        rendered.put(start, "up 1\n");
        assert_eq!(rendered.get(start + std::time::Duration::from_millis(99)).as_deref(), Some("up 1\n"));
        assert_eq!(rendered.get(start + Rendered::REUSE), None, "rendered again");
    }

    #[test]
    fn the_workloads_directory_is_known_however_it_is_spelled() {
        let root = tempfile::tempdir().unwrap();
        let wl = root.path().join("wl");
        std::fs::create_dir(&wl).unwrap();
        std::os::unix::fs::symlink(&wl, root.path().join("link")).unwrap();
        std::fs::create_dir(root.path().join("next")).unwrap();
        for spelled in [wl.join("."), root.path().join("next/../wl/"), root.path().join("link")] {
            assert!(same_dir(&spelled, &wl), "{}", spelled.display());
        }
        assert!(!same_dir(&root.path().join("next"), &wl));
        assert!(!same_dir(&root.path().join("missing"), &wl));
    }
}
