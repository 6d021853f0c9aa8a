//! `paddock start|stop|restart NAME`, `paddock reload` and `paddock plan`:
//! one-off requests to the running daemon.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use super::client::{ClientArgs, unexpected};
use crate::protocol::{Report, Request, Response, Verb};

/// A workload, on the running daemon.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The workload (its manifest's file name without `.toml`).
    pub name: String,
    /// Return once the daemon has taken the request, without waiting for
    /// the workload to get there.
    #[arg(long)]
    pub no_block: bool,
    /// How long to wait for the workload to get there (then exit 1).
    #[arg(long, value_name = "DURATION", default_value = "90s")]
    pub timeout: crate::model::Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Rescan the workloads directory now (as SIGHUP does), wait until it is
/// done, and print what changed, and every file's errors and warnings.
/// After a package upgrade replaced the binary, or when the daemon's
/// configuration changed since it read it (paddock.toml, a policy, a
/// network definition), re-execute it in place instead, as `upgrade`
/// does, every workload kept running. Exit status 1 when the daemon
/// cannot be reached or refuses, or when the workloads directory is
/// refused (unsafe, or not there: nothing of it is applied).
#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Upgrade the running daemon in place: it re-executes the paddock binary
/// installed now (after a package upgrade replaced it), keeping its pid and
/// every workload running; the new daemon adopts them. Waits until it
/// answers again. `systemctl reload paddock` does the same when the binary
/// was replaced. The new binary is asked first (`paddock daemon
/// --validate`): a configuration it would not start with refuses the
/// upgrade, and the daemon goes on; so does one that moves state_dir,
/// run_dir, cgroup_root, [remap] or the bridge's subnet, which only a
/// restart can change. Exit status 1 when refused, or when the daemon does
/// not answer within 30 s.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Show what the daemon would do if the workloads directory looked like
/// DIR, without doing it: "would start web (manifest added)", "would restart
/// worker (manifest changed: command)", "would stop old-job (manifest
/// removed)", and every problem.
///
/// DIR is validated with the daemon's own policies and planned against
/// what runs now, by the same planner the daemon uses, as a reload would
/// take it: a valid file the daemon already has unchanged is no change.
/// Exit status 0 when every file is valid, 1 when some are not, when DIR
/// is one the daemon would refuse (not root's, or writable by others), or
/// when the daemon is down.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A directory of manifests [default: the workloads directory as it is now].
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Which of `start`, `stop` and `restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Start,
    Stop,
    Restart,
}

/// The workload's status now, if the daemon knows it.
fn status_of(args: &NameArgs) -> Result<Option<crate::protocol::WorkloadStatus>, CliError> {
    match args.client.ask(&Request::Status { name: None })? {
        Response::Status(all) => Ok(all.into_iter().find(|w| w.name == args.name)),
        other => Err(unexpected(&other)),
    }
}

/// Waits, as systemctl does, until the workload got where `act` sends it,
/// and says where it is; exit 1 when it did not get there.
fn wait_until_done(act: Act, args: &NameArgs, before: Option<i32>) -> Result<super::ExitCode, CliError> {
    let deadline = std::time::Instant::now() + args.timeout.as_std();
    loop {
        let Some(w) = status_of(args)? else {
            return Err(CliError::new(1, format!("{} is gone: its manifest was removed", args.name)));
        };
        // Escaped, as `status` shows it: an error may quote a plugin's or
        // a manifest's text.
        // The start's error; not its file's (an edit refused while the
        // last valid version runs: how that version's start or run ended
        // is what happened).
        let start_error = if w.file_invalid { w.start_error.as_ref() } else { w.error.as_ref() };
        let why = || match (start_error, &w.last_exit) {
            (Some(e), _) => crate::text::escape_controls(e).into_owned(),
            (None, Some(exit)) => {
                let exit = exit.to_string();
                let exit = exit.trim_matches('"');
                format!("its run ended ({exit}); `paddock logs {}` shows its output", w.name)
            }
            (None, None) => format!("see `paddock status {}`", w.name),
        };
        let done = match (act, w.state.as_str()) {
            (Act::Stop, "stopped" | "exited" | "failed" | "invalid") => Some(Ok(format!("{} {}", w.name, w.state))),
            (Act::Stop, _) => None,
            (_, "running") if w.pid.is_some() && w.pid != before => {
                Some(Ok(format!("{} running (pid {})", w.name, w.pid.unwrap_or_default())))
            }
            (_, "exited") if before.is_none() || w.pid != before => Some(Ok(format!("{} ran and exited", w.name))),
            (_, "failed") => Some(Err(format!("{} failed: {}", w.name, why()))),
            // Its run may have begun and ended already (no error then).
            (_, "backoff") if start_error.is_none() && w.last_exit.is_some() => {
                Some(Err(format!("{} did not stay up: {} (it will be tried again)", w.name, why())))
            }
            (_, "backoff") => Some(Err(format!("{} did not start: {} (it will be tried again)", w.name, why()))),
            _ => None,
        };
        match done {
            Some(Ok(said)) => {
                println!("{said}");
                return Ok(0);
            }
            Some(Err(said)) => return Err(CliError::new(1, said)),
            None if std::time::Instant::now() >= deadline => {
                let waiting = if w.waiting_for.is_empty() {
                    String::new()
                } else {
                    format!(", waiting for {}", w.waiting_for.join(", "))
                };
                return Err(CliError::new(
                    1,
                    format!(
                        "{} is still {}{waiting} after {} (--timeout; `paddock status {}` says more)",
                        w.name, w.state, args.timeout, w.name
                    ),
                ));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

pub fn act(act: Act, args: NameArgs) -> Result<super::ExitCode, CliError> {
    // A restart is done once another run is up.
    let before = match (act, args.no_block) {
        (Act::Restart, false) => status_of(&args)?.and_then(|w| w.pid),
        _ => None,
    };
    let name = args.name.clone();
    let request = match act {
        Act::Start => Request::Start { name },
        Act::Stop => Request::Stop { name },
        Act::Restart => Request::Restart { name },
    };
    match args.client.ask(&request)? {
        Response::Done(text) if args.no_block => {
            println!("{text}");
            Ok(0)
        }
        Response::Done(text) => {
            println!("{text}");
            wait_until_done(act, &args, before)
        }
        other => Err(unexpected(&other)),
    }
}

/// An action as `reload` tells it ("started web (manifest added)") or
/// `plan` ("would start web (manifest added)").
fn tell(report: &Report, past: bool) -> String {
    let mut out = String::new();
    for action in &report.actions {
        let verb = match (past, action.verb) {
            (false, Verb::Start) => "would start",
            (false, Verb::Retry) => "would retry",
            (false, Verb::Restart) => "would restart",
            (false, Verb::Stop) => "would stop",
            (false, Verb::Wait) => "would wait to start",
            (true, Verb::Start) => "started",
            (true, Verb::Retry) => "retried",
            (true, Verb::Restart) => "restarted",
            (true, Verb::Stop) => "stopped",
            (true, Verb::Wait) => "waits to start",
        };
        out += &format!("{verb} {} ({})\n", action.name, action.why);
    }
    if report.queued > 0 {
        let at_a_time = crate::daemon::STARTS_PER_PASS;
        out += &format!("{} more to start ({at_a_time} are started at a time)\n", report.queued);
    }
    for problem in &report.invalid {
        out += &format!("invalid: {problem}\n");
    }
    for warning in &report.warnings {
        // A manifest's own come rendered as `check` shows them, saying so.
        let rendered = warning.lines().next().is_some_and(|first| first.contains(": warning: "));
        let prefix = if rendered { "" } else { "warning: " };
        out += &format!("{prefix}{warning}\n");
    }
    if report.actions.is_empty() && report.invalid.is_empty() && report.refused.is_none() {
        out += if past { "nothing changed\n" } else { "nothing to do\n" };
    }
    out
}

pub fn reload(args: ReloadArgs) -> Result<super::ExitCode, CliError> {
    match args.client.ask(&Request::Reload)? {
        Response::Reloaded(report) => {
            print!("{}", tell(&report, true));
            // Nothing of the directory was applied: said last, and a failure.
            match &report.refused {
                Some(why) => {
                    eprintln!(
                        "error: the workloads directory is refused: {why}: no change is applied until it is fixed; what runs keeps running"
                    );
                    Ok(1)
                }
                None => Ok(0),
            }
        }
        // The binary was replaced: the daemon takes it (as `paddock upgrade`).
        Response::Done(text) => {
            println!("{text}");
            wait_for_the_daemon(&args.client)
        }
        other => Err(unexpected(&other)),
    }
}

pub fn upgrade(args: UpgradeArgs) -> Result<super::ExitCode, CliError> {
    match args.client.ask(&Request::Upgrade) {
        Ok(Response::Done(text)) => println!("{text}"),
        // The daemon may be gone before its answer is read: the exec closed the connection.
        Err(CliError::Failed { message, .. }) if message.contains("closed the connection") => {}
        Ok(other) => return Err(unexpected(&other)),
        Err(e) => return Err(e),
    }
    wait_for_the_daemon(&args.client)
}

/// After an upgrade: until the re-executed daemon answers (30 s at most),
/// at the socket asked, or, given both `--socket` and `--config`, at the
/// one that configuration names now (the new image listens there when it
/// changed).
fn wait_for_the_daemon(client: &ClientArgs) -> Result<super::ExitCode, CliError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let configured = ClientArgs { socket: None, config: client.config.clone(), pid: None };
    let mut asked = client;
    loop {
        let answer = asked.ask(&Request::Status { name: None });
        if answer.is_err() && client.socket.is_some() && client.config.is_some() {
            asked = if std::ptr::eq(asked, client) { &configured } else { client };
        }
        match answer {
            Ok(Response::Status(workloads)) => {
                let running = workloads.iter().filter(|w| w.state == "running").count();
                println!("the daemon answers again: {running} workloads running");
                return Ok(0);
            }
            _ if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(50)),
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => return Err(e),
        }
    }
}

pub fn plan(args: PlanArgs) -> Result<super::ExitCode, CliError> {
    let shown = args.dir.clone().unwrap_or_default();
    let dir = args
        .dir
        .as_deref()
        .map(std::fs::canonicalize)
        .transpose()
        .map_err(|e| CliError::new(1, format!("{}: {e}", shown.display())))?;
    let request = Request::Plan { dir: dir.map(|d| d.display().to_string()) };
    match args.client.ask(&request)? {
        Response::Plan(report) => {
            print!("{}", tell(&report, false));
            Ok(u8::from(!report.invalid.is_empty()))
        }
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PlannedAction;

    #[test]
    fn reports_read_as_sentences() {
        let action = |verb, name: &str, why: &str| PlannedAction { verb, name: name.into(), why: why.into() };
        let report = Report {
            actions: vec![
                action(Verb::Start, "web", "manifest added"),
                action(Verb::Restart, "worker", "manifest changed: command"),
                action(Verb::Stop, "old", "manifest removed"),
            ],
            invalid: vec!["/w/bad.toml:1:1: error: x".into()],
            queued: 0,
            warnings: vec!["web.toml: memory limit needs the memory cgroup controller".into()],
            refused: None,
        };
        assert_eq!(
            tell(&report, false),
            "would start web (manifest added)\nwould restart worker (manifest changed: command)\nwould stop old (manifest removed)\ninvalid: /w/bad.toml:1:1: error: x\nwarning: web.toml: memory limit needs the memory cgroup controller\n"
        );
        assert!(
            tell(&report, true)
                .starts_with("started web (manifest added)\nrestarted worker (manifest changed: command)\nstopped old")
        );
        assert_eq!(tell(&Report::default(), true), "nothing changed\n");
    }
}
