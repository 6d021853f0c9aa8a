//! `paddock status [NAME]`: the running daemon's workloads, as a table or
//! JSON; with a NAME, everything about that one.

use std::io::Write;

use clap::Args;

use super::CliError;
use super::client::{ClientArgs, terminal_width, unexpected};
use crate::protocol::{Request, Response, WorkloadDetail, WorkloadStatus};
use crate::text::escape_controls as escape;
use crate::validate::Color;

/// Show the workloads of the running daemon: name, state, pid, host uid
/// range, restarts, uptime, last exit, and the current error; below the
/// table, what no row shows (a file whose name is no workload's, one that
/// is no manifest, the workloads directory refused as unsafe).
///
/// With NAME, everything about that workload: its effective manifest (the
/// defaults filled in, as the policies saw it), its log file and its recent
/// state changes. Exit status 1 when the daemon cannot be reached or does
/// not know NAME.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One workload.
    pub name: Option<String>,
    /// JSON: an array with an object per workload, or one object for NAME.
    #[arg(long)]
    pub json: bool,
    /// Keep showing the table, redrawn at each change (the daemon sends
    /// them; nothing is polled), until Ctrl-C. With --json, one line per change.
    #[arg(short, long, conflicts_with = "name")]
    pub watch: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// "running (healthy)", "stopped (held)", as `docker ps` shows health.
fn state_text(w: &WorkloadStatus) -> String {
    match (&w.health, w.held) {
        (Some(health), _) => format!("{} ({health})", w.state),
        (None, true) => format!("{} (held)", w.state),
        (None, false) => w.state.clone(),
    }
}

fn paint_state(color: Color, state: &str, padded: String) -> String {
    let code = match state.split(' ').next().unwrap_or("") {
        "running" => "32",
        "failed" => "1;31",
        "backoff" | "starting" | "stopping" | "waiting" => "33",
        _ => "2",
    };
    color.paint(code, &padded)
}

fn range(m: &Option<crate::protocol::IdMap>) -> String {
    m.as_ref().map_or("-".into(), |m| format!("{}-{}", m.host_start, u64::from(m.host_start) + u64::from(m.size) - 1))
}

/// The last run's exit; while another run is up, said to be the previous one's.
fn last_exit(w: &WorkloadStatus) -> String {
    let exit = w.last_exit.as_ref().map_or("-".into(), |e| e.to_string().trim_matches('"').to_owned());
    match (w.last_exit.is_some(), w.state.as_str()) {
        (true, "running" | "starting" | "stopping") => format!("{exit} (previous)"),
        _ => exit,
    }
}

/// The address a workload is reached at (its first, without the prefix).
fn address(w: &WorkloadStatus) -> String {
    w.addresses.first().map_or("-".into(), |a| a.split('/').next().unwrap_or(a).to_owned())
}

fn ports(w: &WorkloadStatus) -> String {
    if w.ports.is_empty() { "-".into() } else { w.ports.join(",") }
}

/// The columns given up first when the terminal is narrow.
const DROP_ORDER: [&str; 6] = ["UPTIME", "RESTARTS", "HOST UIDS", "PORTS", "ADDRESS", "PID"];

/// The table, at most `width` columns wide when given: columns are dropped
/// (uptime first) and error lines cut until it fits. ADDRESS and PORTS
/// appear when some workload has a network of its own.
pub fn table(workloads: &[WorkloadStatus], width: Option<usize>, color: Color) -> String {
    let networked = workloads.iter().any(|w| !w.addresses.is_empty() || !w.ports.is_empty());
    type Cell = fn(&WorkloadStatus) -> String;
    let columns: Vec<(&str, Cell)> = [
        ("NAME", (|w: &WorkloadStatus| w.name.clone()) as Cell),
        ("STATE", state_text),
        ("PID", |w| w.pid.map_or("-".into(), |p| p.to_string())),
        ("ADDRESS", address),
        ("PORTS", ports),
        ("HOST UIDS", |w| range(&w.uid_map)),
        ("RESTARTS", |w| w.restarts.to_string()),
        ("UPTIME", |w| w.uptime_seconds.map_or("-".into(), uptime)),
        ("LAST EXIT", last_exit),
    ]
    .into_iter()
    .filter(|(h, _)| networked || !matches!(*h, "ADDRESS" | "PORTS"))
    .collect();
    let header: Vec<String> = columns.iter().map(|(h, _)| h.to_string()).collect();
    let rows: Vec<Vec<String>> = workloads.iter().map(|w| columns.iter().map(|(_, cell)| cell(w)).collect()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    let total = |shown: &[usize]| shown.iter().map(|&i| widths[i]).sum::<usize>() + 2 * shown.len().saturating_sub(1);
    if let Some(width) = width {
        for drop in DROP_ORDER {
            if total(&shown) <= width {
                break;
            }
            shown.retain(|&i| header[i] != drop);
        }
    }
    let line = |cells: &[String], paint: bool| {
        let mut out = Vec::new();
        for &i in &shown {
            let padded = format!("{:<w$}", cells[i], w = widths[i]);
            out.push(if paint && i == 1 { paint_state(color, &cells[1], padded) } else { padded });
        }
        out.join("  ").trim_end().to_owned()
    };
    let cut = |s: &str| match width {
        Some(w) if s.chars().count() > w => s.chars().take(w.saturating_sub(1)).collect::<String>() + "…",
        _ => s.to_owned(),
    };
    let mut out = line(&header, false) + "\n";
    for (row, w) in rows.iter().zip(workloads) {
        out += &(line(row, true) + "\n");
        if !w.waiting_for.is_empty() {
            out += &cut(&format!("    waiting for {}", escape(&w.waiting_for.join(", "))));
            out.push('\n');
        }
        for l in error_lines(w) {
            out += &cut(&format!("    {}", escape(&l)));
            out.push('\n');
        }
    }
    out
}

/// The current error's lines: a file's, and then, if the last valid
/// version did not start (or is held in doubt), why: the file's error is
/// not the cause.
fn error_lines(w: &WorkloadStatus) -> Vec<String> {
    let mut lines: Vec<String> = w.error.iter().flat_map(|e| e.lines()).map(str::to_owned).collect();
    if let Some(start) = w.start_error.as_ref().filter(|_| w.file_invalid) {
        lines.push(format!("the last valid version: {}", start.lines().next().unwrap_or("")));
        lines.extend(start.lines().skip(1).map(str::to_owned));
    }
    lines
}

fn detail(d: &WorkloadDetail, color: Color) -> String {
    let w = &d.status;
    let mut out = format!("{}: {}\n", w.name, paint_state(color, &state_text(w), state_text(w)));
    let mut field = |k: &str, v: String| out.push_str(&format!("  {k:<12}{v}\n"));
    field("manifest", escape(&w.manifest).into_owned());
    field("pid", w.pid.map_or("-".into(), |p| p.to_string()));
    if let Some(network) = &w.network {
        field("network", network.clone());
        field("addresses", if w.addresses.is_empty() { "-".into() } else { w.addresses.join(", ") });
        field("ports", ports(w));
    }
    field("host uids", range(&w.uid_map));
    field("host gids", range(&w.gid_map));
    field("restarts", w.restarts.to_string());
    field("uptime", w.uptime_seconds.map_or("-".into(), uptime));
    field("last exit", last_exit(w).replace("(previous)", "(the previous run's)"));
    field("start took", d.start_latency_ms.map_or("-".into(), |ms| format!("{ms:.1} ms")));
    field("log", escape(&d.log).into_owned());
    if !w.waiting_for.is_empty() {
        field("waiting for", w.waiting_for.join(", "));
    }
    if let Some(health) = &w.health {
        field("health", health.clone());
    }
    if !d.probes.is_empty() {
        out.push_str("  last probes:\n");
        for p in &d.probes {
            let verdict = if p.ok { "ok" } else { "failed" };
            let said = p.output.lines().last().unwrap_or("");
            out.push_str(&format!("    {}  {verdict}  {}\n", p.time, escape(said)));
        }
    }
    let errors = error_lines(w);
    if !errors.is_empty() {
        out.push_str("  error:\n");
        for l in errors {
            out.push_str(&format!("    {}\n", escape(&l)));
        }
    }
    if let Some(m) = &d.effective_manifest {
        out.push_str("\neffective manifest:\n");
        for l in m.lines() {
            // No trailing spaces on the blank lines between tables.
            if l.is_empty() { out.push('\n') } else { out.push_str(&format!("  {}\n", escape(l))) }
        }
    }
    if !d.changes.is_empty() {
        out.push_str("\nrecent changes:\n");
        for c in &d.changes {
            out.push_str(&format!("  {}  {}\n", c.time, escape(&c.event)));
        }
    }
    out
}

/// `status --watch`: a table per change the daemon sends, each replacing
/// the last on a terminal; JSON lines with --json.
fn watch(args: &StatusArgs) -> Result<super::ExitCode, CliError> {
    use super::OrFail;
    use std::io::BufRead;
    let socket = args.client.socket().or_fail(1)?;
    let stream = super::client::connect(&socket).map_err(|e| CliError::new(1, e.to_string()))?;
    let mut request = serde_json::to_vec(&Request::Watch).map_err(std::io::Error::from)?;
    request.push(b'\n');
    (&stream).write_all(&request)?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    for line in std::io::BufReader::new(stream).lines() {
        let line = line?;
        let workloads = match serde_json::from_str::<Response>(&line) {
            Ok(Response::Status(workloads)) => workloads,
            Ok(Response::Error(e)) => return Err(CliError::new(1, e)),
            _ => return Err(CliError::new(1, format!("unexpected answer from the daemon: {line}"))),
        };
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut out, &workloads).map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            let stamp = crate::timefmt::rfc3339(std::time::SystemTime::now());
            // On a terminal each table replaces the last; else they follow each other.
            let clear = if terminal { "\x1b[H\x1b[2J" } else { "\n" };
            writeln!(out, "{clear}{stamp}  (paddock status --watch; Ctrl-C to stop)")?;
            out.write_all(table(&workloads, terminal_width(), Color::for_stdout()).as_bytes())?;
        }
        out.flush()?;
    }
    Err(CliError::new(1, "the daemon closed the connection (it stopped?)".to_owned()))
}

pub fn run(args: StatusArgs) -> Result<super::ExitCode, CliError> {
    if args.watch {
        return watch(&args);
    }
    let request = Request::Status { name: args.name.clone() };
    let answer = args.client.ask(&request)?;
    let mut out = std::io::stdout().lock();
    match answer {
        Response::Status(workloads) if args.json => {
            serde_json::to_writer_pretty(&mut out, &workloads).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Response::Status(workloads) => {
            out.write_all(table(&workloads, terminal_width(), Color::for_stdout()).as_bytes())?;
            // What no row shows; a daemon too old to know the request
            // answers it with an error, and there is nothing to add.
            if let Ok(Response::Notes(notes)) = args.client.ask(&Request::Notes) {
                for note in notes {
                    writeln!(out, "{}", crate::text::escape_controls(&note))?;
                }
            }
        }
        Response::Detail(d) if args.json => {
            serde_json::to_writer_pretty(&mut out, &d).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Response::Detail(d) => out.write_all(detail(&d, Color::for_stdout()).as_bytes())?,
        other => return Err(unexpected(&other)),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, error: Option<&str>) -> WorkloadStatus {
        WorkloadStatus {
            name: name.into(),
            state: "running".into(),
            pid: Some(4242),
            uid_map: Some(crate::protocol::IdMap { host_start: 165536, size: 65536 }),
            gid_map: None,
            restarts: 3,
            last_exit: Some(serde_json::Value::from("SIGKILL")),
            error: error.map(str::to_owned),
            file_invalid: false,
            start_error: None,
            uptime_seconds: Some(3725),
            manifest: format!("/etc/paddock/workloads/{name}.toml"),
            held: false,
            network: None,
            addresses: Vec::new(),
            ports: Vec::new(),
            health: None,
            waiting_for: Vec::new(),
        }
    }

    #[test]
    fn the_table_fits_the_terminal_by_dropping_columns_and_cutting_errors() {
        let ws = [w("web", Some("/etc/paddock/workloads/web.toml:1:12: error: TOML syntax: unclosed array"))];
        let wide = table(&ws, None, Color::Never);
        assert_eq!(
            wide,
            "NAME  STATE    PID   HOST UIDS      RESTARTS  UPTIME  LAST EXIT\n\
             web   running  4242  165536-231071  3         1h2m    SIGKILL (previous)\n    \
             /etc/paddock/workloads/web.toml:1:12: error: TOML syntax: unclosed array\n"
        );
        let narrow = table(&ws, Some(40), Color::Never);
        for l in narrow.lines() {
            assert!(l.chars().count() <= 40, "{l:?} is wider than 40");
        }
        assert!(narrow.starts_with("NAME  STATE    PID   LAST EXIT\n"), "{narrow}");
        assert!(narrow.lines().nth(2).unwrap().ends_with('…'));
    }

    #[test]
    fn address_and_ports_are_columns_when_some_workload_has_a_network() {
        let mut web = w("web", None);
        web.network = Some("bridge".into());
        web.addresses = vec!["10.77.0.5/16".into()];
        web.ports = vec!["8080:80/tcp".into(), "127.0.0.1:5353:53/udp".into()];
        let ws = [web, w("batch", None)];
        assert_eq!(
            table(&ws, None, Color::Never),
            "NAME   STATE    PID   ADDRESS    PORTS                              HOST UIDS      RESTARTS  UPTIME  LAST EXIT\n\
             web    running  4242  10.77.0.5  8080:80/tcp,127.0.0.1:5353:53/udp  165536-231071  3         1h2m    SIGKILL (previous)\n\
             batch  running  4242  -          -                                  165536-231071  3         1h2m    SIGKILL (previous)\n"
        );
        let narrow = table(&ws, Some(60), Color::Never);
        assert!(narrow.starts_with("NAME   STATE    PID   ADDRESS    LAST EXIT\n"), "{narrow}");
    }

    /// A file turned invalid does not hide why the last valid version did
    /// not start (helper-112: the table and the detail showed only the
    /// file's error).
    #[test]
    fn a_start_error_is_shown_beside_the_files() {
        let mut web = w("web", Some("/etc/paddock/workloads/web.toml:3:1: error: unknown key `bogus`"));
        web.file_invalid = true;
        web.start_error = Some("mount source /srv/data: ENOENT".into());
        let said = "    the last valid version: mount source /srv/data: ENOENT\n";
        assert!(table(std::slice::from_ref(&web), None, Color::Never).ends_with(said));
        let d = WorkloadDetail {
            status: web,
            log: "/var/lib/paddock/logs/web.log".into(),
            start_latency_ms: None,
            probes: Vec::new(),
            effective_manifest: None,
            changes: Vec::new(),
        };
        assert!(detail(&d, Color::Never).contains(&format!(
            "  error:\n    /etc/paddock/workloads/web.toml:3:1: error: unknown key `bogus`\n{said}"
        )));
    }

    #[test]
    fn colour_only_when_asked() {
        let ws = [w("web", None)];
        assert!(!table(&ws, None, Color::Never).contains('\x1b'));
        assert!(table(&ws, None, Color::Always).contains("\x1b[32mrunning"));
    }
}
