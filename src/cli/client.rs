//! What every command that talks to the running daemon shares: where its
//! socket is, and one request/answer exchange on it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{LoadConfigError, OrFail};
use crate::protocol::{Request, Response};

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The daemon's control socket [default: the configuration's `socket`,
    /// /run/paddock/paddock.sock]. Also from $PADDOCK_SOCKET, which the
    /// try-it daemon (./try.sh) tells you to set.
    #[arg(long, value_name = "PATH", env = "PADDOCK_SOCKET")]
    pub socket: Option<PathBuf>,
    /// The daemon's configuration, read for its `socket` (and by `logs`, its
    /// `state_dir`) [default:
    /// /etc/paddock/paddock.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The daemon by its pid, asked at the socket it listens on, wherever
    /// that is (beats --socket and --config). The unit's ExecReload gives
    /// $MAINPID: a socket moved in the configuration is found until an
    /// upgrade moves the daemon there.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

/// Where the daemon cannot be looked for.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(transparent)]
    Config(#[from] LoadConfigError),
    #[error("cannot find the control socket of process {pid}: {source}")]
    Pid { pid: u32, source: std::io::Error },
}

impl ClientArgs {
    /// The socket the process `--pid` listens on, else the flag, else the
    /// configuration's socket, else the default.
    pub fn socket(&self) -> Result<PathBuf, SocketError> {
        match (self.pid, &self.socket) {
            (Some(pid), _) => listening_socket_of(pid).map_err(|source| SocketError::Pid { pid, source }),
            (None, Some(s)) => Ok(s.clone()),
            (None, None) => Ok(super::load_client_config(self.config.as_deref()).map(|c| c.socket)?),
        }
    }

    /// Asks the daemon; an error (exit status 1) says how to reach it or
    /// what it refused.
    pub fn ask(&self, request: &Request) -> Result<Response, super::CliError> {
        let socket = self.socket().or_fail(1)?;
        match ask(&socket, request, Duration::from_secs(60)).or_fail(1)? {
            Response::Error(e) => Err(super::CliError::new(1, e)),
            answer => Ok(answer),
        }
    }
}

/// The Unix socket with a path that process `pid` listens on (the
/// daemon's control socket: its only one): each of its descriptors that
/// is a socket, copied (pidfd_getfd, which the host's root may) and asked
/// whether it listens and where it is bound. Not looked up in
/// /proc/net/unix: a socket's path is printed there as it is, so any
/// user's socket with a newline in its path adds lines of its making (a
/// listening socket of the daemon's inode at a path of its choosing), and
/// one with a byte that is not UTF-8 makes the table no text.
pub fn listening_socket_of(pid: u32) -> std::io::Result<PathBuf> {
    use nix::sys::socket::{UnixAddr, getsockname, getsockopt, sockopt};
    let process = crate::sandbox::pidfd_open(pid as i32)?;
    let mut refused = None;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(link) = std::fs::read_link(entry.path()) else { continue };
        if !link.to_str().is_some_and(|l| l.starts_with("socket:[")) {
            continue;
        }
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else { continue };
        let socket = match crate::sandbox::pidfd_getfd(std::os::fd::AsFd::as_fd(&process), fd) {
            Ok(socket) => socket,
            Err(e) => {
                refused = Some(e);
                continue;
            }
        };
        if !getsockopt(&socket, sockopt::AcceptConn).unwrap_or(false) {
            continue;
        }
        // Not an abstract socket, nor an unbound one.
        let Some(path) = getsockname::<UnixAddr>(std::os::fd::AsRawFd::as_raw_fd(&socket))
            .ok()
            .and_then(|a| a.path().map(Path::to_path_buf))
        else {
            continue;
        };
        // A relative path is the process's working directory's.
        return Ok(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default().join(path));
    }
    Err(match refused {
        Some(errno) => std::io::Error::other(format!(
            "its sockets cannot be looked at (pidfd_getfd: {errno}): run this as root, or give the socket with --socket PATH"
        )),
        None => std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "it listens on no Unix socket with a path (is it paddock's daemon?)",
        ),
    })
}

/// An answer the command did not ask for: exit status 1.
pub fn unexpected(answer: &Response) -> super::CliError {
    super::CliError::new(1, format!("unexpected answer from the daemon: {answer:?}"))
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("cannot reach the daemon at {}: {source}{}", .socket.display(), hint(.source))]
    Unreachable { socket: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Request(serde_json::Error),
    #[error(
        "the socket at {} is not the daemon's: it is listened on by uid {uid}, not root; nothing was sent to it \
         (paddock's daemon runs as root: check --socket and PADDOCK_SOCKET)",
        .socket.display()
    )]
    NotTheDaemon { socket: PathBuf, uid: u32 },
    #[error(
        "the daemon at {} did not answer within {:?} (it is busy or hung: `systemctl status paddock`, and its log)",
        .socket.display(),
        .waited
    )]
    NoAnswerWithin { socket: PathBuf, waited: Duration },
    #[error("the daemon at {} closed the connection without an answer", .0.display())]
    NoAnswer(PathBuf),
    #[error("the daemon's answer is not understood: {0}")]
    NotUnderstood(serde_json::Error),
}

/// What to try when the daemon cannot be reached this way.
fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            " (is the daemon running? `systemctl status paddock`; or give its socket with --socket or PADDOCK_SOCKET)"
        }
        std::io::ErrorKind::PermissionDenied => " (the control socket is root's: use sudo)",
        _ => "",
    }
}

/// Connects to the daemon's socket, and sends nothing until it is sure
/// that root listens there: a socket path may be in a directory others
/// can write (PADDOCK_SOCKET left naming /tmp/paddock-try after a reboot),
/// and a request can carry environment values and a terminal.
pub fn connect(socket: &Path) -> Result<UnixStream, AskError> {
    let unreachable = |source| AskError::Unreachable { socket: socket.to_owned(), source };
    let stream = UnixStream::connect(socket).map_err(unreachable)?;
    // The listener's credentials, as they were when it called listen().
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|errno| unreachable(errno.into()))?;
    match peer.uid() {
        0 => Ok(stream),
        uid => Err(AskError::NotTheDaemon { socket: socket.to_owned(), uid }),
    }
}

/// Sends one request to the daemon and reads its answer.
pub fn ask(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, AskError> {
    let unreachable = |source| AskError::Unreachable { socket: socket.to_owned(), source };
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    let mut line = serde_json::to_vec(request).map_err(AskError::Request)?;
    line.push(b'\n');
    // A daemon that refuses before it reads (a client not root) answers
    // and closes: the write fails (EPIPE), and the answer is there to read.
    let written = stream.write_all(&line);
    if let Err(e) = &written
        && !matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
    {
        return Err(unreachable(written.unwrap_err()));
    }
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(|source| match source.kind() {
        // The read timeout, as the kernel says it (EAGAIN).
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            AskError::NoAnswerWithin { socket: socket.to_owned(), waited: timeout }
        }
        _ => unreachable(source),
    })?;
    if answer.is_empty() {
        return Err(match written {
            Err(e) => unreachable(e),
            Ok(()) => AskError::NoAnswer(socket.to_owned()),
        });
    }
    serde_json::from_str(&answer).map_err(AskError::NotUnderstood)
}

/// The width of the terminal on stdout, or None when it is not one.
pub fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize into `size`; fd 1 is only queried.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that answers before it reads (refusing a client that is
    /// not root) and closes: its answer is read, not "Broken pipe".
    #[test]
    fn an_answer_given_before_the_request_was_read_is_read() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("paddock.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let refuser = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let refusal = Response::Error("permission denied: the control socket is root's".to_owned());
            let mut line = serde_json::to_vec(&refusal).unwrap();
            line.push(b'\n');
            stream.write_all(&line).unwrap();
        });
        // Longer than the socket holds: the write fails once the peer is gone.
        let request = Request::Logs { name: "x".repeat(4 << 20) };
        let answer = ask(&socket, &request, Duration::from_secs(5)).unwrap();
        refuser.join().unwrap();
        assert_eq!(answer, Response::Error("permission denied: the control socket is root's".to_owned()));
    }

    #[test]
    fn a_daemon_that_does_not_answer_is_said_to_be_busy_not_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("paddock.sock");
        // Root's (these tests run as root), accepting and never answering.
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let silent = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
        let err = ask(&socket, &Request::Reload, Duration::from_millis(200)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the daemon at {} did not answer within 200ms (it is busy or hung: `systemctl status paddock`, and its log)",
                socket.display()
            )
        );
        drop(silent.join());
    }
}
