//! `paddock logs NAME`: a workload's captured stdout and stderr, from the
//! files the daemon keeps (`STATE_DIR/logs/NAME.log` and its rotations).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;

use super::CliError;
use super::client::{ClientArgs, unexpected};
use crate::logline::{LOG_KEEP, files_oldest_first, split_line};
use crate::protocol::{Request, Response};

/// Show a workload's captured stdout and stderr (both go to one log,
/// across its runs, rotated at 10 MiB).
///
/// Each line was stamped with the time it arrived; `--timestamps` shows it.
/// On a terminal, control characters the workload wrote are shown escaped
/// (`\x1b`), so its output cannot drive your terminal; `--raw` prints them
/// as they are (output to a pipe is always raw).
///
/// The daemon says where the log is; when it is not running (after
/// `systemctl stop paddock`, say), the files are read from the
/// configuration's state_dir (or --state-dir) all the same.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The workload.
    pub name: String,
    /// Keep printing what the workload writes, across its restarts (until Ctrl-C).
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines [default: all].
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// Only lines written in the last DURATION, e.g. "10m", "1h", "30s".
    #[arg(long, value_name = "DURATION")]
    pub since: Option<crate::model::Duration>,
    /// Start each line with the time it arrived (RFC 3339, UTC).
    #[arg(short, long)]
    pub timestamps: bool,
    /// Print control characters as the workload wrote them, even on a terminal.
    #[arg(long)]
    pub raw: bool,
    /// Where the logs are when the daemon is not running [default: the
    /// configuration's state_dir, /var/lib/paddock].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

struct Printer {
    since: Option<SystemTime>,
    timestamps: bool,
    /// Escape control characters (on a terminal, without --raw).
    escape: bool,
    /// A line without a time (from before stamping) goes with the one before it.
    keep_unstamped: bool,
}

impl Printer {
    /// The line as it is shown, or None when `--since` leaves it out.
    fn show(&mut self, line: &str) -> Option<String> {
        let (time, text) = split_line(line);
        let keep = match (self.since, time) {
            (Some(since), Some(t)) => t >= since,
            (Some(_), None) => self.keep_unstamped,
            (None, _) => true,
        };
        self.keep_unstamped = keep;
        let shown = if self.timestamps { line } else { text };
        keep.then(|| if self.escape { crate::text::escape_controls(shown).into_owned() } else { shown.to_owned() })
    }
}

/// Appends a shown line, keeping only the last `limit`.
fn keep_last(lines: &mut std::collections::VecDeque<String>, limit: usize, shown: Option<String>) {
    if let Some(shown) = shown {
        if lines.len() == limit {
            lines.pop_front();
        }
        lines.push_back(shown);
    }
}

fn read_lines(path: &Path, printer: &mut Printer, out: &mut std::collections::VecDeque<String>, limit: usize) {
    let Ok(file) = File::open(path) else { return };
    for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
        keep_last(out, limit, printer.show(&String::from_utf8_lossy(&line)));
    }
}

/// Where the workload's log is: as the daemon says, or, with no daemon
/// to ask, where it keeps them.
fn log_file(args: &LogsArgs) -> Result<PathBuf, CliError> {
    use super::OrFail;
    let socket = args.client.socket().or_fail(1)?;
    let request = Request::Logs { name: args.name.clone() };
    let source = match super::client::ask(&socket, &request, Duration::from_secs(60)) {
        Ok(Response::Logs { path }) => return Ok(PathBuf::from(path)),
        Ok(Response::Error(e)) => return Err(CliError::new(1, e)),
        Ok(other) => return Err(unexpected(&other)),
        Err(super::client::AskError::Unreachable { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            source
        }
        Err(e) => return Err(CliError::new(1, e.to_string())),
    };
    let name = crate::model::WorkloadName::try_from(args.name.as_str())
        .map_err(|e| CliError::new(1, format!("no workload {:?}: {e}", args.name)))?;
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        // Files read as root and printed: from a directory only a trusted configuration names.
        None => super::load_config(args.client.config.as_deref()).or_fail(1)?.state_dir,
    };
    let path = crate::daemon::executor::log_path(&state_dir, &name);
    if files_oldest_first(&path, LOG_KEEP).is_empty() && !path.exists() {
        return Err(CliError::new(
            1,
            format!(
                "cannot reach the daemon at {}: {source} (is the daemon running?), and no log for {name} is at {}: give --state-dir if its logs are elsewhere",
                socket.display(),
                path.display()
            ),
        ));
    }
    eprintln!("paddock logs: the daemon is not running; reading {}", path.display());
    Ok(path)
}

pub fn run(args: LogsArgs) -> Result<super::ExitCode, CliError> {
    let path = log_file(&args)?;
    let since = args.since.map(|d| SystemTime::now() - d.as_std());
    let escape = !args.raw && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut printer = Printer { since, timestamps: args.timestamps, escape, keep_unstamped: true };
    let limit = args.lines.unwrap_or(usize::MAX);
    let mut lines = std::collections::VecDeque::new();
    if limit > 0 {
        for file in files_oldest_first(&path, LOG_KEEP).iter().filter(|f| **f != path) {
            read_lines(file, &mut printer, &mut lines, limit);
        }
    }
    // The current file through one handle, which -f then follows.
    let mut current = File::open(&path).ok();
    let mut pending = Vec::new();
    if let Some(f) = &mut current {
        f.read_to_end(&mut pending)?;
    }
    // Without -f a last line still being written is shown too; -f waits for its end.
    let shown_now = if args.follow { complete_len(&pending) } else { pending.len() };
    if limit > 0 {
        for line in pending[..shown_now].split_inclusive(|b| *b == b'\n') {
            let shown = printer.show(&String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line)));
            keep_last(&mut lines, limit, shown);
        }
    }
    pending.drain(..shown_now);
    let mut out = std::io::stdout().lock();
    let quiet_on_pipe =
        |e: std::io::Error| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(0) } else { Err(CliError::Io(e)) };
    for line in &lines {
        if let Err(e) = writeln!(out, "{line}") {
            return quiet_on_pipe(e);
        }
    }
    if let Err(e) = out.flush() {
        return quiet_on_pipe(e);
    }
    if !args.follow {
        return Ok(0);
    }
    drop(out);
    follow(&path, current, pending, printer).or_else(quiet_on_pipe)
}

/// The length of the complete lines at the start of `buf`.
fn complete_len(buf: &[u8]) -> usize {
    buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

/// How long a rotated-away log is still read: its writer switches to the
/// new one a moment after the new one is made, and what it wrote in that
/// moment is in the old one.
const ROTATED_GRACE: Duration = Duration::from_secs(2);

/// The longest line `follow` holds while waiting for its end: longer, it
/// is shown as it is (a writer that never ends a line cannot grow this
/// process without bound).
const PENDING_MAX: usize = 1 << 20;

/// Prints what is appended to the log, reopening it when it is rotated
/// (or created, for a workload that has not written yet), and from its
/// start when it is truncated (`truncate -s 0`, logrotate's copytruncate).
fn follow(path: &Path, mut current: Option<File>, mut pending: Vec<u8>, mut printer: Printer) -> std::io::Result<u8> {
    // The file rotated away, read on for a moment (`ROTATED_GRACE`).
    let mut rotated: Option<(File, std::time::Instant)> = None;
    loop {
        if let Some((old, since)) = &mut rotated {
            old.read_to_end(&mut pending)?;
            if since.elapsed() > ROTATED_GRACE {
                rotated = None;
            }
        }
        if let Some(f) = &mut current {
            // Truncated below what was read: read again from its start.
            if f.metadata().is_ok_and(|m| m.len() < f.stream_position().unwrap_or(0)) {
                f.rewind()?;
                pending.clear();
            }
            f.read_to_end(&mut pending)?;
        }
        let mut complete = complete_len(&pending);
        if complete == 0 && pending.len() > PENDING_MAX {
            pending.push(b'\n');
            complete = pending.len();
        }
        if complete > 0 {
            let mut out = std::io::stdout().lock();
            for line in pending[..complete - 1].split(|b| *b == b'\n') {
                if let Some(shown) = printer.show(&String::from_utf8_lossy(line)) {
                    writeln!(out, "{shown}")?;
                }
            }
            out.flush()?;
            pending.drain(..complete);
        }
        // Rotated: the name now holds a new file. The old one is read on
        // for a moment: its writer may not have switched yet.
        let now = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let held = current.as_ref().and_then(|f| f.metadata().ok()).map(|m| (m.dev(), m.ino()));
        if now.is_some() && now != held {
            let new = File::open(path).ok();
            if let Some(old) = std::mem::replace(&mut current, new) {
                rotated = Some((old, std::time::Instant::now()));
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
