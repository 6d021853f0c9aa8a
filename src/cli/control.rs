//! `paddock start|stop|restart NAME`, `paddock reload` and `paddock plan`:
//! one-off requests to the running daemon.

use std::path::PathBuf;

use clap::Args;

use super::client::{ClientArgs, fail, unexpected};
use crate::protocol::{Report, Request, Response, Verb};

/// A workload, on the running daemon.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The workload (its manifest's file name without `.toml`).
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Rescan the workloads directory now (as SIGHUP does), wait until it is
/// done, and print what changed.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Show what the daemon would do if the workloads directory looked like
/// DIR, without doing it: "would start web", "would restart worker
/// (command changed)", "would stop old-job", and every problem.
///
/// DIR is validated with the daemon's own policies and planned against
/// what runs now, by the same planner the daemon uses. Exit status 0 when
/// every file is valid, 1 when some are not (or the daemon is down).
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A directory of manifests [default: the workloads directory as it is now].
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `start`, `stop` or `restart`.
pub fn act(command: &str, args: NameArgs) -> std::io::Result<super::ExitCode> {
    let name = args.name.clone();
    let request = match command {
        "start" => Request::Start { name },
        "stop" => Request::Stop { name },
        _ => Request::Restart { name },
    };
    match args.client.ask(&request) {
        Ok(Response::Done(text)) => {
            println!("{text}");
            Ok(0)
        }
        Ok(other) => fail(command, &unexpected(&other)),
        Err(e) => fail(command, &e),
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
            (true, Verb::Start) => "started",
            (true, Verb::Retry) => "retried",
            (true, Verb::Restart) => "restarted",
            (true, Verb::Stop) => "stopped",
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
    if report.actions.is_empty() && report.invalid.is_empty() {
        out += if past { "nothing changed\n" } else { "nothing to do\n" };
    }
    out
}

pub fn reload(args: ReloadArgs) -> std::io::Result<super::ExitCode> {
    match args.client.ask(&Request::Reload) {
        Ok(Response::Reloaded(report)) => {
            print!("{}", tell(&report, true));
            Ok(0)
        }
        Ok(other) => fail("reload", &unexpected(&other)),
        Err(e) => fail("reload", &e),
    }
}

pub fn plan(args: PlanArgs) -> std::io::Result<super::ExitCode> {
    let dir = match args.dir.as_deref().map(std::fs::canonicalize).transpose() {
        Ok(d) => d,
        Err(e) => return fail("plan", &format!("{}: {e}", args.dir.unwrap_or_default().display())),
    };
    let request = Request::Plan { dir: dir.map(|d| d.display().to_string()) };
    match args.client.ask(&request) {
        Ok(Response::Plan(report)) => {
            print!("{}", tell(&report, false));
            Ok(u8::from(!report.invalid.is_empty()))
        }
        Ok(other) => fail("plan", &unexpected(&other)),
        Err(e) => fail("plan", &e),
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
        };
        assert_eq!(
            tell(&report, false),
            "would start web (manifest added)\nwould restart worker (manifest changed: command)\nwould stop old (manifest removed)\ninvalid: /w/bad.toml:1:1: error: x\n"
        );
        assert!(
            tell(&report, true)
                .starts_with("started web (manifest added)\nrestarted worker (manifest changed: command)\nstopped old")
        );
        assert_eq!(tell(&Report::default(), true), "nothing changed\n");
    }
}
