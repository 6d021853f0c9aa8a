//! What the supervisor shows: `status` rows, one workload's detail, the
//! answers to requests, and the Prometheus metrics, all read from the core
//! and rendered here, in one place.

use std::fmt::Write;

use super::executor::{Executor, log_path};
use super::store::Store;
use super::supervisor::Supervisor;
use crate::model::WorkloadName;
use crate::protocol::{Change, IdMap, Request, Response, WorkloadDetail, WorkloadStatus};
use crate::reconcile::{Answer, Clock, Command, File, State, Workload};

/// The answer to `paddock start|stop|restart NAME`.
pub fn answer_text(name: &WorkloadName, answer: &Answer) -> String {
    match answer {
        Answer::Stopping => {
            format!("stopping {name}; it stays stopped until `paddock start {name}` or a change to its manifest")
        }
        Answer::Held => format!("{name} is held stopped until `paddock start {name}` or a change to its manifest"),
        Answer::AlreadyHeld => format!("{name} is already held stopped"),
        Answer::Starting => format!("starting {name}"),
        Answer::NotStopped(state) => format!("{name} is not stopped (state {state})"),
        Answer::Restarting => format!("restarting {name}"),
    }
}

/// What a control request comes to: an answer now, or work for the event
/// loop (a rescan, or a preview that validates a directory off the loop).
#[derive(Debug)]
pub enum Answered {
    /// The answer, and whether what should run may have changed.
    Now(Response, bool),
    Reload,
    Plan(Option<String>),
    Upgrade,
}

impl<E: Executor, S: Store> Supervisor<E, S> {
    /// Answers a control request (all but the two that need the loop).
    pub fn answer(&mut self, request: Request, at: Clock) -> Answered {
        let act = |s: &mut Self, name: &str, command| match s.request(name, command, at) {
            Ok(text) => Answered::Now(Response::Done(text), true),
            Err(e) => Answered::Now(Response::Error(e), false),
        };
        let no_log =
            |name: &str| Response::Error(format!("no workload {name:?} and no log of one (see `paddock status`)"));
        match request {
            Request::Status { name: None } => Answered::Now(Response::Status(self.status(at)), false),
            Request::Status { name: Some(name) } => match self.detail(&name, at) {
                Some(detail) => Answered::Now(Response::Detail(Box::new(detail)), false),
                None => Answered::Now(Response::Error(format!("no workload {name:?} (see `paddock status`)")), false),
            },
            Request::Logs { name } => match WorkloadName::try_from(name.as_str()) {
                Ok(n) => {
                    let path = log_path(&self.state_dir, &n);
                    let known = path.exists() || self.core.get(&n).is_some();
                    let response =
                        if known { Response::Logs { path: path.display().to_string() } } else { no_log(&name) };
                    Answered::Now(response, false)
                }
                Err(_) => Answered::Now(no_log(&name), false),
            },
            Request::Start { name } => act(self, &name, Command::Start),
            Request::Stop { name } => act(self, &name, Command::Stop),
            Request::Restart { name } => act(self, &name, Command::Restart),
            Request::Reload => Answered::Reload,
            Request::Plan { dir } => Answered::Plan(dir),
            Request::Upgrade => Answered::Upgrade,
            // Served apart (it carries descriptors): see `server::answer`.
            Request::Exec(_) => Answered::Now(Response::Error("exec needs its descriptors".to_owned()), false),
            Request::Watch => Answered::Now(Response::Error("watch is served as a stream".to_owned()), false),
            Request::Notes => Answered::Now(Response::Notes(self.notes()), false),
        }
    }

    /// What no row of `status` shows: the workloads directory refused,
    /// invalid files whose name is no workload's, files that are not
    /// manifests (`STATUS=` counts the invalid ones).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(why) = &self.refused {
            notes.push(format!(
                "the workloads directory {} is refused: {why}; no change is applied until it is fixed, and what runs keeps running",
                self.workloads.display()
            ));
        }
        notes.extend(self.unwatched_note());
        for (file, problems) in &self.invalid {
            let named = file.strip_suffix(".toml").and_then(|stem| WorkloadName::try_from(stem).ok());
            if named.is_some_and(|n| self.core.get(&n).is_some()) {
                continue;
            }
            // Its first line names the file and the line (`FILE:1:1: error: ...`).
            let first = problems.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
            notes.push(if first.contains(file.as_str()) { first.to_owned() } else { format!("{file}: {first}") });
        }
        for file in &self.not_read {
            notes.push(format!("{file}: not read: only NAME.toml files are manifests"));
        }
        notes
    }

    fn row(&self, w: &Workload, at: Clock) -> WorkloadStatus {
        let file = format!("{}.toml", w.name);
        // A workload in the host's user namespace maps no ids (its slice,
        // kept for its name, is not used).
        let remapped = (w.runs.as_ref().or(w.desired.as_ref())).is_none_or(|d| d.manifest.namespaces.remapped());
        let slice = self.store.slice(&w.name).filter(|_| remapped);
        let network = self.executor.network(&w.name);
        let start_error = w.doubt.clone().or_else(|| w.error.as_ref().map(|failure| failure.error.to_string()));
        let (error, start_error) = match &w.file {
            File::Invalid(problems) => (Some(problems.clone()), start_error),
            _ => (start_error, None),
        };
        WorkloadStatus {
            name: w.name.to_string(),
            state: w.state_name().to_owned(),
            pid: w.state.pid(),
            uid_map: slice.map(|s| IdMap { host_start: s.uid.start, size: s.uid.count }),
            gid_map: slice.map(|s| IdMap { host_start: s.gid.start, size: s.gid.count }),
            restarts: w.restarts,
            last_exit: w.last_exit.map(|e| match e {
                crate::model::Exit::Code(c) => serde_json::Value::from(c),
                other => serde_json::Value::from(other.short()),
            }),
            error,
            file_invalid: matches!(w.file, File::Invalid(_)),
            start_error,
            uptime_seconds: match w.state {
                State::Running { since, .. } => Some(at.now.saturating_duration_since(since).as_secs()),
                _ => None,
            },
            manifest: self.workloads.join(&file).display().to_string(),
            held: w.hold.is_some(),
            network: network.as_ref().map(|n| n.network.clone()),
            addresses: network.as_ref().map(|n| n.addresses.clone()).unwrap_or_default(),
            ports: network.map(|n| n.ports).unwrap_or_default(),
            health: match (&w.state, &w.health) {
                (State::Running { .. }, Some(h)) => Some(h.status.name().to_owned()),
                _ => None,
            },
            waiting_for: w.waiting.iter().map(|w| w.to_string()).collect(),
        }
    }

    /// Every workload, by name.
    pub fn status(&self, at: Clock) -> Vec<WorkloadStatus> {
        self.core.workloads().map(|w| self.row(w, at)).collect()
    }

    /// Everything about one workload.
    pub fn detail(&self, name: &str, at: Clock) -> Option<WorkloadDetail> {
        let name = WorkloadName::try_from(name).ok()?;
        let w = self.core.get(&name)?;
        Some(WorkloadDetail {
            status: self.row(w, at),
            effective_manifest: w.desired.as_ref().and_then(|d| toml::to_string(d.manifest.as_ref()).ok()),
            changes: w
                .history
                .iter()
                .map(|c| Change { time: crate::timefmt::rfc3339(c.at), event: c.what.to_string() })
                .collect(),
            log: log_path(&self.state_dir, &name).display().to_string(),
            start_latency_ms: w.start_latency.map(|d| d.as_secs_f64() * 1000.0),
            probes: w
                .health
                .iter()
                .flat_map(|h| &h.results)
                .map(|r| crate::protocol::ProbeOutcome {
                    time: crate::timefmt::rfc3339(r.at),
                    ok: r.ok,
                    output: r.output.clone(),
                })
                .collect(),
        })
    }

    /// Prometheus text format (version 0.0.4).
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        family(&mut out, "paddock_workload_state", "gauge", "1 for the workload's current state, 0 for the others.");
        for w in self.core.workloads() {
            for state in State::NAMES {
                let on = u8::from(w.state_name() == state);
                let _ = writeln!(out, "paddock_workload_state{{workload=\"{}\",state=\"{state}\"}} {on}", w.name);
            }
        }
        family(
            &mut out,
            "paddock_workload_health",
            "gauge",
            "For a running workload with a health check: 1 for its health now, 0 for the others.",
        );
        for w in self.core.workloads() {
            let (State::Running { .. }, Some(h)) = (&w.state, &w.health) else { continue };
            for health in crate::reconcile::HealthStatus::NAMES {
                let on = u8::from(h.status.name() == health);
                let _ = writeln!(out, "paddock_workload_health{{workload=\"{}\",health=\"{health}\"}} {on}", w.name);
            }
        }
        family(&mut out, "paddock_workload_restarts", "gauge", "Restarts since the manifest last changed.");
        for w in self.core.workloads() {
            let _ = writeln!(out, "paddock_workload_restarts{{workload=\"{}\"}} {}", w.name, w.restarts);
        }
        family(
            &mut out,
            "paddock_workload_last_exit_code",
            "gauge",
            "The last run's exit code (128 + signal when killed).",
        );
        for w in self.core.workloads() {
            if let Some(exit) = w.last_exit {
                let _ = writeln!(out, "paddock_workload_last_exit_code{{workload=\"{}\"}} {}", w.name, exit.code());
            }
        }
        family(
            &mut out,
            "paddock_workload_start_latency_seconds",
            "gauge",
            "The last start, from spawn to the workload's exec.",
        );
        for w in self.core.workloads() {
            if let Some(d) = w.start_latency {
                let _ = writeln!(
                    out,
                    "paddock_workload_start_latency_seconds{{workload=\"{}\"}} {:.6}",
                    w.name,
                    d.as_secs_f64()
                );
            }
        }
        family(
            &mut out,
            "paddock_reconcile_duration_seconds",
            "summary",
            "Time spent planning and acting, per reconcile.",
        );
        let _ = writeln!(out, "paddock_reconcile_duration_seconds_sum {:.6}", self.stats.reconcile_seconds);
        let _ = writeln!(out, "paddock_reconcile_duration_seconds_count {}", self.stats.reconciles);
        family(&mut out, "paddock_last_reconcile_duration_seconds", "gauge", "The last reconcile's duration.");
        let _ = writeln!(out, "paddock_last_reconcile_duration_seconds {:.6}", self.stats.last_reconcile_seconds);
        let files = self.snapshot().len();
        let invalid = self.snapshot().keys().filter(|f| self.invalid.contains_key(*f)).count();
        family(&mut out, "paddock_manifests", "gauge", "Manifest files in the workloads directory, by validity.");
        let _ = writeln!(out, "paddock_manifests{{validity=\"valid\"}} {}", files - invalid);
        let _ = writeln!(out, "paddock_manifests{{validity=\"invalid\"}} {invalid}");
        let (used, total) = self.store.slice_counts();
        family(&mut out, "paddock_id_slices", "gauge", "Id slices of the remap ranges, used and in all.");
        let _ = writeln!(out, "paddock_id_slices{{kind=\"used\"}} {used}");
        let _ = writeln!(out, "paddock_id_slices{{kind=\"total\"}} {total}");
        let mut attached: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        let mut published = 0;
        for w in self.core.workloads() {
            if let Some(n) = self.executor.network(&w.name) {
                *attached.entry(n.network).or_default() += 1;
                published += n.ports.len();
            }
        }
        family(&mut out, "paddock_network_attachments", "gauge", "Workloads attached to each network.");
        for (network, count) in attached {
            let _ = writeln!(out, "paddock_network_attachments{{network=\"{network}\"}} {count}");
        }
        family(&mut out, "paddock_published_ports", "gauge", "Host ports published by attached workloads.");
        let _ = writeln!(out, "paddock_published_ports {published}");
        out
    }
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// What the loop and the scans ask of the supervisor's state.
impl<E: Executor, S: Store> Supervisor<E, S> {
    /// The manifests that hold published ports or come `after` others now,
    /// by file name: a rescan refuses a change that wants one of their
    /// ports or closes a cycle through them.
    pub fn claims(&self) -> Vec<(String, std::sync::Arc<crate::model::Manifest>)> {
        self.core
            .workloads()
            .filter_map(|w| w.desired.as_ref().map(|d| (w, d)))
            .filter(|(_, d)| !d.manifest.ports.is_empty() || !d.manifest.after.is_empty())
            .map(|(w, d)| (format!("{}.toml", w.name), d.manifest.clone()))
            .collect()
    }

    /// The manifest files of the workloads known from the daemon's kept
    /// state and records, before the first scan: every one of them.
    pub fn restored_files(&self) -> Vec<String> {
        self.core.workloads().map(|w| format!("{}.toml", w.name)).collect()
    }

    /// The manifest files of the workloads that run now (or are about to),
    /// with or without a manifest yet (adopted ones before the first scan).
    pub fn running_files(&self) -> Vec<String> {
        self.core
            .workloads()
            .filter(|w| {
                matches!(
                    w.state,
                    State::Starting { .. } | State::Running { .. } | State::Stopping { .. } | State::Backoff { .. }
                )
            })
            .map(|w| format!("{}.toml", w.name))
            .collect()
    }

    /// Every file that is invalid now, by name, with its problems.
    pub fn invalid_files(&self) -> std::collections::BTreeMap<String, String> {
        self.invalid.clone()
    }

    /// Every file that is invalid now, with its problems.
    pub fn invalid_now(&self) -> Vec<String> {
        self.invalid.values().cloned().collect()
    }

    /// What a reload's answer warns of: the valid files' warnings, the
    /// files that are not manifests, and those that cannot be read for now.
    pub fn warnings_now(&self) -> Vec<String> {
        let not_read = self
            .not_read
            .iter()
            .map(|file| format!("{}: {}", self.workloads.join(file).display(), super::supervisor::NOT_READ));
        let warnings = self.warnings.values().cloned().chain(not_read).chain(self.unread.iter().cloned());
        warnings.chain(self.unwatched_note()).collect()
    }

    /// That the workloads directory cannot be watched now, and what to do.
    fn unwatched_note(&self) -> Option<String> {
        self.unwatched.then(|| {
            format!(
                "the workloads directory {} is not watched (root's inotify instances or watches may be used up: \
                 raise fs.inotify.max_user_instances or max_user_watches; the log says why): its changes are seen at each resync \
                 (`resync_interval`), SIGHUP or `paddock reload`",
                self.workloads.display()
            )
        })
    }

    /// The names whose logs stay: every workload the daemon knows (a
    /// manifest, a sandbox, kept state), and each name reserved in doubt,
    /// whose log tells a rebuilt id table the name was in use.
    pub fn log_owners(&self) -> std::collections::BTreeSet<String> {
        let known = self.core.workloads().map(|w| w.name.to_string());
        known.chain(self.reserved.iter().map(ToString::to_string)).collect()
    }

    /// Why the workloads directory is refused (unsafe), if it is.
    pub fn refused_now(&self) -> Option<String> {
        self.refused.clone()
    }

    /// "3 running, 1 failed, 0 invalid", for systemd's STATUS=.
    pub fn summary(&self) -> String {
        let count = |state: &str| self.core.workloads().filter(|w| w.state_name() == state).count();
        let invalid = self.invalid.len();
        // Waiting out a restart delay: said while there are any (a crash
        // loop is neither running nor failed).
        let restarting = match count("backoff") {
            0 => String::new(),
            n => format!("{n} restarting, "),
        };
        let counts = format!("{} running, {restarting}{} failed, {invalid} invalid", count("running"), count("failed"));
        match &self.refused {
            Some(_) => format!("{counts}; the workloads directory is refused (unsafe): changes are not applied"),
            None if self.unwatched => {
                format!("{counts}; the workloads directory is not watched: changes apply at each resync")
            }
            None => counts,
        }
    }

    /// During shutdown: what is left to stop, each with its signal and the
    /// time left before it is killed ("worker: SIGINT, 8 s"), or that it
    /// waits for what comes after it to stop first.
    pub fn left_to_stop(&self, now: std::time::Instant) -> Vec<String> {
        let mut left: Vec<(bool, String)> = self
            .core
            .workloads()
            .filter(|w| w.state.has_sandbox())
            .map(|w| match w.state {
                State::Stopping { deadline: Some(deadline), .. } => {
                    let signal = w.running_manifest().map_or(crate::model::Signal::Term, |m| m.stop.signal);
                    let left = deadline.saturating_duration_since(now).as_secs_f64().ceil();
                    (false, format!("{}: {signal}, {left} s", w.name))
                }
                State::Stopping { deadline: None, .. } => (false, format!("{}: killed", w.name)),
                _ => (true, format!("{}: after what comes after it", w.name)),
            })
            .collect();
        // What is being stopped first, then what waits its turn (only the
        // first few are named when many are left).
        left.sort_by_key(|(waiting, _)| *waiting);
        left.into_iter().map(|(_, line)| line).collect()
    }
}
