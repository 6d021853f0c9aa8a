//! `paddock exec`: a command inside a running workload, through the
//! daemon. The command gets pipes (or, with -t, a new pseudo-terminal)
//! that this process relays: never this process's own terminal or
//! descriptors, which a workload could otherwise drive (TIOCSTI).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};

use super::client::ClientArgs;
use super::{CliError, ExitCode, OrFail};
use crate::protocol::{ExecInput, ExecRequest, Request, Response};

/// Run a command inside a running workload, as the workload runs: its
/// namespaces, ids, capabilities, seccomp filter, cgroup and environment.
///
/// Without -t, on a terminal, control characters the command writes are
/// shown escaped (`\x1b`), as `paddock logs` shows them, so that what the
/// workload wrote (a file it planted for you to `cat`) cannot drive your
/// terminal; --raw passes them as they are (output to a pipe always is).
///
/// The exit status is the command's (128+N when killed by signal N; 126
/// when it cannot be executed, 127 when it is not found, 125 when paddock
/// could not run it). The command is killed when its workload stops.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  paddock exec web -- hostname\n  paddock exec -it web sh\n  paddock exec web ls -l /  (what follows the name is the command's)"
)]
pub struct ExecArgs {
    /// Pass stdin on to the command (without it, the command's stdin is empty).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a pseudo-terminal (window size, Ctrl-C, job control).
    #[arg(short, long)]
    pub tty: bool,
    /// Run as this uid inside the sandbox instead of the manifest's user;
    /// with :GID, as this gid instead of its group (else its group stays).
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Set an environment variable (repeatable), on top of the manifest's.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The working directory inside the sandbox instead of the manifest's.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Without -t, pass control characters to this terminal as they are.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The workload.
    pub name: String,
    /// The command and its arguments: everything after the name (options
    /// too), or after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 1.., required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn usage(message: String) -> CliError {
    CliError::new(125, message)
}

fn parse_user(s: &str) -> Result<(u32, Option<u32>), CliError> {
    let bad = || usage(format!("--user {s}: write a numeric uid, or UID:GID"));
    match s.split_once(':') {
        Some((u, g)) => Ok((u.parse().map_err(|_| bad())?, Some(g.parse().map_err(|_| bad())?))),
        None => Ok((s.parse().map_err(|_| bad())?, None)),
    }
}

/// The terminal's settings, put back when dropped.
struct Raw(Option<(std::io::Stdin, Termios)>);

impl Raw {
    fn enter() -> Raw {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else { return Raw(None) };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return Raw(None);
        }
        Raw(Some((stdin, saved)))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some((stdin, saved)) = &self.0 {
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

fn window_size(from: i32) -> Option<libc::winsize> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
    (unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut size) } == 0).then_some(size)
}

/// `copy`, each control character written as `paddock logs` shows it
/// (`text::escape_controls`), and each byte that is not UTF-8 as `\xNN`;
/// a character split between two reads is held until it is whole.
fn copy_escaped(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        pending.extend_from_slice(&buf[..n]);
        let (shown, held) = escape_bytes(&pending, n == 0);
        if to.write_all(shown.as_bytes()).is_err() || to.flush().is_err() || n == 0 {
            return;
        }
        pending.drain(..pending.len() - held);
    }
}

/// `bytes` escaped, and how many bytes at its end (an unfinished UTF-8
/// character) are held back for the next read, unless `last`.
fn escape_bytes(bytes: &[u8], last: bool) -> (String, usize) {
    use std::fmt::Write as _;
    let mut shown = String::new();
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                shown.push_str(&crate::text::escape_controls(text));
                return (shown, 0);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                shown.push_str(&crate::text::escape_controls(std::str::from_utf8(valid).expect("valid up to here")));
                let bad = match e.error_len() {
                    Some(len) => len,
                    None if !last => return (shown, after.len()),
                    None => after.len(),
                };
                for b in &after[..bad] {
                    let _ = write!(shown, "\\x{b:02x}");
                }
                rest = &after[bad..];
            }
        }
    }
}

fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() || to.flush().is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

pub fn run(args: ExecArgs) -> Result<ExitCode, CliError> {
    let (user, group) = match &args.user {
        Some(u) => parse_user(u).map(|(u, g)| (Some(u), g))?,
        None => (None, None),
    };
    let env = args
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(usage(format!("--env {kv}: write KEY=VALUE"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let socket = args.client.socket().or_fail(125)?;
    let stream = super::client::connect(&socket).map_err(|e| usage(e.to_string()))?;
    // Signals arrive at a thread of ours (blocked here before any thread starts).
    let mut forwarded = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGWINCH] {
        forwarded.add(s);
    }
    forwarded.thread_block().or_fail(125)?;

    // The command's end of each stream, and ours.
    let (theirs, master, out_read, err_read, in_write): ([OwnedFd; 3], _, _, _, _) = if args.tty {
        let size = window_size(0);
        let pty = nix::pty::openpty(size.as_ref(), None).or_fail(125)?;
        let slave = pty.slave;
        ([slave.try_clone().or_fail(125)?, slave.try_clone().or_fail(125)?, slave], Some(pty.master), None, None, None)
    } else {
        let (stdin_read, stdin_write) = if args.interactive {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).or_fail(125)?;
            (r, Some(w))
        } else {
            (OwnedFd::from(std::fs::File::open("/dev/null").or_fail(125)?), None)
        };
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).or_fail(125)?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).or_fail(125)?;
        ([stdin_read, out_w, err_w], None, Some(out_r), Some(err_r), stdin_write)
    };
    let request = Request::Exec(ExecRequest {
        name: args.name.clone(),
        command: args.command.clone(),
        user,
        group,
        env,
        workdir: args.workdir.as_ref().map(|w| w.display().to_string()),
        tty: args.tty,
    });
    let mut line = serde_json::to_vec(&request).map_err(std::io::Error::from)?;
    line.push(b'\n');
    let raw: Vec<i32> = theirs.iter().map(|fd| fd.as_raw_fd()).collect();
    nix::sys::socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(&line)],
        &[nix::sys::socket::ControlMessage::ScmRights(&raw)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .or_fail(125)?;
    drop(theirs);
    let mut answers = std::io::BufReader::new(stream.try_clone().or_fail(125)?);
    let mut next = || -> Result<Response, CliError> {
        let mut text = String::new();
        match std::io::BufRead::read_line(&mut answers, &mut text) {
            Ok(0) | Err(_) => Err(usage("the daemon closed the connection".to_owned())),
            Ok(_) => serde_json::from_str(&text).map_err(|e| usage(format!("bad answer from the daemon: {e}"))),
        }
    };
    match next()? {
        Response::Entered { .. } => {}
        Response::Error(e) => return Err(usage(e)),
        other => return Err(usage(format!("unexpected answer from the daemon: {other:?}"))),
    }

    // Relays, each on a thread of its own: they end with their streams.
    let _raw = (args.tty && args.interactive).then(Raw::enter);
    let mut outputs = Vec::new();
    let mut _pty = None;
    if let Some(master) = master {
        let reader = std::fs::File::from(master.try_clone().or_fail(125)?);
        outputs.push(std::thread::spawn(move || copy(reader, std::io::stdout())));
        let master = std::fs::File::from(master);
        let resize = master.as_raw_fd();
        if args.interactive {
            std::thread::spawn(move || copy(std::io::stdin(), master));
        } else {
            _pty = Some(master);
        }
        let mut control = stream.try_clone().or_fail(125)?;
        std::thread::spawn(move || forward(&forwarded, &mut control, Some(resize)));
    } else {
        // What the command writes reaches this terminal escaped (see --raw).
        let escape = |terminal: bool| !args.raw && terminal;
        if let Some(out) = out_read {
            let escaped = escape(std::io::IsTerminal::is_terminal(&std::io::stdout()));
            outputs.push(std::thread::spawn(move || match escaped {
                true => copy_escaped(std::fs::File::from(out), std::io::stdout()),
                false => copy(std::fs::File::from(out), std::io::stdout()),
            }));
        }
        if let Some(err) = err_read {
            let escaped = escape(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            outputs.push(std::thread::spawn(move || match escaped {
                true => copy_escaped(std::fs::File::from(err), std::io::stderr()),
                false => copy(std::fs::File::from(err), std::io::stderr()),
            }));
        }
        if let Some(input) = in_write {
            std::thread::spawn(move || copy(std::io::stdin(), std::fs::File::from(input)));
        }
        let mut control = stream.try_clone().or_fail(125)?;
        std::thread::spawn(move || forward(&forwarded, &mut control, None));
    }
    let code = match next()? {
        Response::Ended { code } => code,
        Response::Error(e) => return Err(usage(e)),
        other => return Err(usage(format!("unexpected answer from the daemon: {other:?}"))),
    };
    // The output the command left in its pipes (not waiting on whatever
    // it started in the background that still holds them).
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    for output in outputs {
        while !output.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let _ = std::io::stdout().flush();
    Ok(u8::try_from(code).unwrap_or(125))
}

/// Passes this process's signals on to the command (through the daemon),
/// and the terminal's new size to the pseudo-terminal.
fn forward(signals: &SigSet, control: &mut UnixStream, pty: Option<i32>) {
    loop {
        let Ok(signal) = signals.wait() else { return };
        if signal == Signal::SIGWINCH {
            if let (Some(master), Some(size)) = (pty, window_size(0)) {
                // SAFETY: TIOCSWINSZ reads the winsize we pass; `master` is open for the process's life.
                unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) };
            }
            continue;
        }
        let Ok(mut line) = serde_json::to_vec(&ExecInput { signal: signal as i32 }) else { return };
        line.push(b'\n');
        if control.write_all(&line).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_for_a_terminal_is_escaped_and_a_split_character_waits_for_its_end() {
        assert_eq!(escape_bytes(b"ok\x1b]52;c;aGk=\x07\n", false), ("ok\\x1b]52;c;aGk=\\x07\n".to_owned(), 0));
        // "é" is 0xc3 0xa9: its first byte is held for the next read...
        assert_eq!(escape_bytes(b"caf\xc3", false), ("caf".to_owned(), 1));
        assert_eq!(escape_bytes(b"caf\xc3\xa9", false), ("café".to_owned(), 0));
        // ...unless the stream ended; a byte that is no UTF-8 is shown as such.
        assert_eq!(escape_bytes(b"caf\xc3", true), ("caf\\xc3".to_owned(), 0));
        assert_eq!(escape_bytes(b"a\xffb\xc2\x9b", false), ("a\\xffb\\u{9b}".to_owned(), 0));
    }
}
