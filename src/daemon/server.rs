//! The control socket and the metrics listener. Each survives what a
//! client or the host throws at it: an accept error (out of descriptors)
//! is logged once and retried, not fatal; at most `MAX_CLIENTS`
//! connections are served at once (more wait in the kernel's backlog; on
//! the metrics listener, which others may reach, the oldest connection
//! still sending its request is closed to make room); a request must
//! arrive within `READ_TIMEOUT` and fit in `protocol::MAX_REQUEST` bytes.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::protocol::{MAX_REQUEST, Request, Response};

/// Connections served at once.
pub const MAX_CLIENTS: usize = 64;
/// How long a client has to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to be taken by its client.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After an accept error, the pause before the next accept (so a daemon
/// out of descriptors does not spin).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// A spell of accept errors that begins within this of the last one said
/// is counted, not said (see `AcceptFailures`).
const ACCEPT_QUIET: Duration = Duration::from_secs(60);

/// Which of a listener's accept errors are said: the first of a spell,
/// and the spell's end. Out of descriptors, accepts fail and succeed in
/// turn as others close theirs: each turn would be two lines. A spell
/// that begins within `ACCEPT_QUIET` of the last one said is counted and
/// said with the next one said, or once it has lasted past that minute
/// (it may never end).
#[derive(Debug, Default)]
struct AcceptFailures {
    failing: bool,
    /// When a spell was last said, and whether the current one was.
    said_at: Option<std::time::Instant>,
    said: bool,
    unsaid: u32,
}

impl AcceptFailures {
    /// An accept failed at `now`: when this is to be said, Some(the
    /// spells not said since the last one that was).
    fn failed(&mut self, now: std::time::Instant) -> Option<u32> {
        let quiet = self.said_at.is_some_and(|at| now.saturating_duration_since(at) < ACCEPT_QUIET);
        match (std::mem::replace(&mut self.failing, true), self.said, quiet) {
            // A spell said, or one not said while the minute lasts.
            (true, true, _) | (true, false, true) => return None,
            // A new spell within the minute: counted.
            (false, _, true) => {
                self.said = false;
                self.unsaid += 1;
                return None;
            }
            // A new spell past it, or one not said that outlasted it
            // (counted already).
            (false, _, false) => {}
            (true, false, false) => self.unsaid = self.unsaid.saturating_sub(1),
        }
        self.said = true;
        self.said_at = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }

    /// One was accepted: whether to say that a spell that was said is over.
    fn accepted(&mut self) -> bool {
        std::mem::take(&mut self.failing) && self.said
    }
}

/// The control socket's door, closed just before the daemon re-executes
/// itself (an upgrade): connections made after that wait in the kernel's
/// backlog for the next image, which inherits the listening socket. And
/// the count of connections accepted but not yet answered, for the exec
/// to wait on: a connection the exec closes would have no answer at all.
#[derive(Clone)]
pub struct Gate(Arc<GateState>);

struct GateState {
    closed: tokio::sync::watch::Sender<bool>,
    unanswered: AtomicUsize,
}

/// A connection accepted and not answered yet (see `Gate`).
pub struct Unanswered(Gate);

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.0.0.unanswered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open, no connection yet.
impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(GateState { closed: tokio::sync::watch::Sender::new(false), unanswered: AtomicUsize::new(0) }))
    }
}

impl Gate {
    /// No connection accepted from now on (until `open`).
    pub fn close(&self) {
        self.0.closed.send_replace(true);
    }

    pub fn open(&self) {
        self.0.closed.send_replace(false);
    }

    /// The connections accepted that are not answered yet.
    pub fn unanswered(&self) -> usize {
        self.0.unanswered.load(Ordering::Relaxed)
    }

    fn accepted(&self) -> Unanswered {
        self.0.unanswered.fetch_add(1, Ordering::Relaxed);
        Unanswered(self.clone())
    }

    /// Returns once the gate is `closed` (true) or open (false).
    async fn until(&self, closed: bool) {
        let mut seen = self.0.closed.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = seen.wait_for(|now| *now == closed).await;
    }
}

/// What reaches the loop from the listeners.
pub enum Control {
    Ask(Request, oneshot::Sender<Response>),
    Metrics(oneshot::Sender<String>),
    /// `paddock exec`: the request, its stdin, stdout and stderr, and where
    /// to send the process that entered the sandbox (or why not).
    Exec(crate::protocol::ExecRequest, [OwnedFd; 3], oneshot::Sender<Result<crate::sandbox::enter::Entered, String>>),
    /// `status --watch`: each change of what status shows is put here, in
    /// place of what its client has not taken yet.
    Watch(tokio::sync::watch::Sender<Response>),
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("control socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("another paddock daemon is listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error(
        "control socket {0}: something other than a socket is there (paddock replaces only a socket no one listens on); remove it, or name another path for `socket`"
    )]
    NotASocket(PathBuf),
}

/// The control socket: mode 0600 in a directory paddock creates, or the
/// one `inherited` from this process's previous image (an in-place
/// upgrade). A stale socket from a daemon that died is replaced; a live
/// one is an error. Returns the listener and the path it listens at.
pub fn bind(path: &Path, inherited: Option<OwnedFd>) -> Result<(UnixListener, PathBuf), BindError> {
    let err = |source| BindError::Socket { path: path.to_owned(), source };
    let Some(fd) = inherited else { return Ok((bind_path(path)?, path.to_owned())) };
    let listener = std::os::unix::net::UnixListener::from(fd);
    let was = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let inherit = |listener: std::os::unix::net::UnixListener, at: PathBuf| {
        listener.set_nonblocking(true).map_err(err)?;
        Ok((UnixListener::from_std(listener).map_err(err)?, at))
    };
    let Some(was) = was.filter(|was| !same_place(was, path)) else { return inherit(listener, path.to_owned()) };
    // The configuration names another socket now (read again by this
    // image): clients that read it look there. Listened on before the old
    // one goes; where it cannot be, the old one stays.
    match bind_path(path) {
        Ok(moved) => {
            tracing::warn!(was = %was.display(), socket = %path.display(), "the configuration names another control socket: listening on it instead");
            drop(listener);
            if std::fs::symlink_metadata(&was).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(&was);
            }
            Ok((moved, path.to_owned()))
        }
        Err(e) => {
            tracing::error!(socket = %was.display(), error = %e, "the configuration names another control socket, which cannot be listened on: listening on the old one until the daemon restarts");
            inherit(listener, was)
        }
    }
}

/// Whether two socket paths name one place (their directories resolved).
fn same_place(a: &Path, b: &Path) -> bool {
    let dir = |p: &Path| p.parent().and_then(|d| std::fs::canonicalize(d).ok());
    a == b || (a.file_name() == b.file_name() && dir(a).is_some() && dir(a) == dir(b))
}

/// Whether a socket is at `path` (to be replaced when no one listens),
/// nothing, or something else, which is refused: only a socket is ours to
/// replace (what is there itself: a link is not followed).
pub fn socket_at(path: &Path) -> Result<bool, BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(true),
        Ok(_) => Err(BindError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(BindError::Socket { path: path.to_owned(), source }),
    }
}

fn bind_path(path: &Path) -> Result<UnixListener, BindError> {
    let err = |source| BindError::Socket { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if socket_at(path)? {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Accepts forever, but while `gate` is closed; see the module's comment.
/// With every slot taken, it waits for one before it accepts (what comes
/// meanwhile waits in the kernel's backlog); with `make_room` (the metrics
/// listener's: it closes the oldest connection that still sends its
/// request), it accepts what comes, and only then makes room for it,
/// never for no one.
async fn accept_loop<S, F, Fut>(
    what: &'static str,
    gate: Option<&Gate>,
    make_room: Option<&(dyn Fn() + Sync)>,
    mut accept: impl FnMut() -> F,
    mut serve: impl FnMut(S) -> Fut,
) where
    F: std::future::Future<Output = std::io::Result<S>>,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut failures = AcceptFailures::default();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) if make_room.is_some() => None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                Some(slot)
            }
        };
        let accepted = match gate {
            None => accept().await,
            Some(gate) => {
                gate.until(false).await;
                tokio::select! {
                    biased;
                    // Not accepted: what waits in the backlog is the next image's.
                    () = gate.until(true) => continue,
                    accepted = accept() => accepted,
                }
            }
        };
        match accepted {
            Ok(stream) => {
                if failures.accepted() {
                    tracing::warn!(listener = what, "accepting connections again");
                }
                // Every slot taken: room is made for this one, now it has come.
                let slot = match slot.map_or_else(|| slots.clone().try_acquire_owned().ok(), Some) {
                    Some(slot) => slot,
                    None => {
                        if let Some(make_room) = make_room {
                            make_room();
                        }
                        let Ok(slot) = slots.clone().acquire_owned().await else { return };
                        slot
                    }
                };
                let served = serve(stream);
                tokio::spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
            Err(error) => {
                match failures.failed(std::time::Instant::now()) {
                    Some(0) => {
                        tracing::error!(listener = what, %error, "cannot accept connections; retrying until it can")
                    }
                    Some(unsaid) => tracing::error!(
                        listener = what,
                        %error,
                        "cannot accept connections; retrying until it can ({unsaid} shorter spells since it was last said)"
                    ),
                    None => {}
                }
                drop(slot);
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

pub async fn serve(listener: UnixListener, tx: mpsc::UnboundedSender<Control>, gate: Gate) {
    accept_loop(
        "control socket",
        Some(&gate),
        None,
        || async { listener.accept().await.map(|(s, _)| s) },
        |stream| answer(stream, tx.clone(), gate.accepted()),
    )
    .await
}

/// The most descriptors a request may carry (exec's stdin, stdout, stderr).
const MAX_FDS: usize = 3;

/// Reads one request line of at most `MAX_REQUEST` bytes, and the
/// descriptors sent with it (more than `MAX_FDS` refuse it). Never reads
/// past the line, as what follows is the client's (an exec's signals):
/// each read takes what a peek found, up to the line's end. Each read is a
/// unit of the runtime's budget, so that long lines from many clients at
/// once take turns with the event loop rather than starve it (read a byte
/// at a time, sixty-four of 64 KiB held every other task for seconds).
async fn read_request(stream: &UnixStream) -> Result<(Request, Vec<OwnedFd>), Response> {
    use std::os::fd::AsFd as _;
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let read = async {
        let mut chunk = vec![0u8; 4096];
        loop {
            tokio::task::consume_budget().await;
            stream.readable().await?;
            let want = chunk.len().min(MAX_REQUEST + 1 - line.len());
            let got = stream.try_io(Interest::READABLE, || {
                // A peek has no room for descriptors: it installs none.
                let peeked = nix::sys::socket::recv(
                    stream.as_raw_fd(),
                    &mut chunk[..want],
                    nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                )?;
                let end = chunk[..peeked].iter().position(|&b| b == b'\n').map_or(peeked, |i| i + 1);
                if end == 0 {
                    return Ok(None);
                }
                // One more than a request may carry: more is refused, not cut short in silence.
                let received =
                    crate::sandbox::recv_with_fds(stream.as_fd(), &mut chunk[..end], MAX_FDS + 1, libc::MSG_DONTWAIT)?;
                Ok(Some(received))
            });
            let received = match got {
                Ok(Some(received)) if received.bytes > 0 => received,
                Ok(_) => return Ok::<bool, std::io::Error>(false),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            fds.extend(received.fds);
            // Refused at once: descriptors must not pile up in the daemon.
            if fds.len() > MAX_FDS {
                return Err(std::io::Error::other(format!("a request carries at most {MAX_FDS} descriptors")));
            }
            if received.fds_cut {
                return Err(std::io::Error::other(
                    "the daemon is out of descriptors and could not take the request's: try again",
                ));
            }
            let data = &chunk[..received.bytes];
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&data[..i]);
                    return Ok(true);
                }
                None => line.extend_from_slice(data),
            }
            if line.len() > MAX_REQUEST {
                return Ok(true);
            }
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) => return Err(Response::Error(format!("no request within {} s", READ_TIMEOUT.as_secs()))),
        Ok(Err(e)) => return Err(Response::Error(format!("reading the request: {e}"))),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST {
        return Err(Response::Error(format!("the request is longer than {MAX_REQUEST} bytes")));
    }
    if fds.len() > MAX_FDS {
        return Err(Response::Error(format!("a request carries at most {MAX_FDS} descriptors")));
    }
    let request = serde_json::from_slice::<Request>(&line).map_err(|e| Response::Error(format!("bad request: {e}")))?;
    Ok((request, fds))
}

/// The client closed its connection (not only its writing half, as a
/// client that waits for the answer may): a Unix stream socket is hung
/// up only when its peer is gone.
fn client_gone(stream: &UnixStream) -> bool {
    use std::os::fd::AsFd as _;
    let mut polled = [nix::poll::PollFd::new(stream.as_fd(), nix::poll::PollFlags::empty())];
    nix::poll::poll(&mut polled, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && polled[0].revents().is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP))
}

/// One JSON request line, one JSON response line. Only root may ask
/// (checked on the peer's credentials, beside the socket's mode).
async fn answer(stream: UnixStream, tx: mpsc::UnboundedSender<Control>, unanswered: Unanswered) {
    let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
    let response = if !root {
        Response::Error("permission denied: the control socket is root's".to_owned())
    } else {
        match read_request(&stream).await {
            // Sent, then closed before the daemon came to it (it waited in
            // the backlog behind busy clients): the client has given up,
            // and was told the daemon did not answer. Not carried out.
            Ok((request, _)) if client_gone(&stream) => {
                let asked = serde_json::to_value(&request).ok().and_then(|v| v["cmd"].as_str().map(str::to_owned));
                tracing::warn!(
                    request = asked.as_deref().unwrap_or("?"),
                    "a request whose client closed its connection before it was read is not carried out"
                );
                return;
            }
            Ok((Request::Exec(request), fds)) => return super::exec::serve(stream, request, fds, tx, unanswered).await,
            Ok((Request::Watch, _)) => {
                // Watched until the client goes: an exec ends it, as a restart would.
                drop(unanswered);
                return watch(stream, tx).await;
            }
            Ok((request, _)) => {
                let (reply, receive) = oneshot::channel();
                if tx.send(Control::Ask(request, reply)).is_err() {
                    return;
                }
                receive.await.unwrap_or_else(|_| Response::Error("the daemon is shutting down".to_owned()))
            }
            Err(refusal) => refusal,
        }
    };
    let (_, mut write) = stream.into_split();
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await;
    }
}

/// `status --watch` clients served at once, so that they never hold every
/// connection slot (each holds one for as long as it watches).
const MAX_WATCHERS: usize = 16;
static WATCHERS: Semaphore = Semaphore::const_new(MAX_WATCHERS);

/// `status --watch`: the status now and at each change, one line each,
/// until the client goes (or stops reading for `WRITE_TIMEOUT`). A client
/// that reads slowly gets the latest status, never a queue of old ones.
async fn watch(stream: UnixStream, tx: mpsc::UnboundedSender<Control>) {
    let (mut read, mut write) = stream.into_split();
    let Ok(_watching) = WATCHERS.try_acquire() else {
        let refused = Response::Error(format!("{MAX_WATCHERS} status --watch clients are served already: end one"));
        if let Ok(mut bytes) = serde_json::to_vec(&refused) {
            bytes.push(b'\n');
            let _ = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await;
        }
        return;
    };
    // Nothing is sent until the loop's first pass puts the status now.
    let (changes, mut receive) = tokio::sync::watch::channel(Response::Status(Vec::new()));
    receive.mark_unchanged();
    if tx.send(Control::Watch(changes)).is_err() {
        return;
    }
    let mut ignored = [0u8; 64];
    loop {
        tokio::select! {
            changed = receive.changed() => {
                if changed.is_err() { return };
                let response = receive.borrow_and_update().clone();
                let Ok(mut bytes) = serde_json::to_vec(&response) else { return };
                bytes.push(b'\n');
                if !matches!(tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await, Ok(Ok(()))) {
                    return;
                }
            }
            // The client closed its end: stop.
            n = read.read(&mut ignored) => if !matches!(n, Ok(1..)) { return },
        }
    }
}

/// A minimal HTTP/1.1 server for one resource: `GET /metrics` answers the
/// Prometheus text format; anything else is 404 (or 405 for other methods).
/// How long the metrics address is left before another try to listen on it.
const METRICS_RETRY: Duration = Duration::from_secs(5);

/// Serves Prometheus metrics at `addr`. Metrics never stop supervision:
/// an address that cannot be listened on (another process holds the
/// port: at boot, or in the moment an upgrade's exec frees it) is logged
/// and tried again every few seconds while the daemon runs.
pub async fn metrics(addr: std::net::SocketAddr, tx: mpsc::UnboundedSender<Control>) {
    let mut said = None;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                if said.as_ref() != Some(&e.kind()) {
                    tracing::error!(%addr, error = %e, "cannot serve metrics at metrics_listen; trying again every {}s (workloads are supervised meanwhile)", METRICS_RETRY.as_secs());
                    said = Some(e.kind());
                }
                tokio::time::sleep(METRICS_RETRY).await;
            }
        }
    };
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    serve_metrics(listener, tx).await;
}

async fn serve_metrics(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Control>) {
    let reading = Reading::default();
    accept_loop(
        "metrics",
        None,
        Some(&|| reading.close_oldest()),
        || async { listener.accept().await.map(|(s, _)| s) },
        // Listed as it is accepted, before its task first runs: the
        // accept loop may take every slot before any of them has.
        |stream| answer_metrics(stream, tx.clone(), reading.clone(), reading.begin()),
    )
    .await
}

/// The metrics connections not yet answered in full (still sending their
/// request, or not reading their answer), oldest first. When every slot
/// is taken, the oldest is closed to make room: anyone who can reach the
/// address could otherwise keep every scrape waiting, with connections
/// that send nothing, for `READ_TIMEOUT` each (as a slowloris does a web
/// server's), or that never read an answer larger than the sockets'
/// buffers, for `WRITE_TIMEOUT` each.
#[derive(Clone, Default)]
struct Reading(Arc<std::sync::Mutex<ReadingList>>);

#[derive(Default)]
struct ReadingList {
    next: u64,
    list: std::collections::VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Reading {
    /// A connection begins to read: its number, and what says it is closed.
    fn begin(&self) -> (u64, oneshot::Receiver<()>) {
        let (close, closed) = oneshot::channel();
        let mut reading = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = reading.next;
        reading.next += 1;
        reading.list.push_back((id, close));
        (id, closed)
    }

    /// It is answered (or has gone).
    fn done(&self, id: u64) {
        let mut reading = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reading.list.retain(|(each, _)| *each != id);
    }

    fn close_oldest(&self) {
        let mut reading = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // (One whose task is gone frees nothing: the next is closed.)
        while let Some((_, close)) = reading.list.pop_front() {
            if close.send(()).is_ok() {
                return;
            }
        }
    }
}

async fn answer_metrics(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Control>,
    reading: Reading,
    (id, closed): (u64, oneshot::Receiver<()>),
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(8192));
    let mut request_line = String::new();
    let read_head = async {
        reader.read_line(&mut request_line).await?;
        // The headers are read and ignored, up to the blank line.
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 || line == "\r\n" || line == "\n" {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    // Off the list however this ends.
    struct Listed(Reading, u64);
    impl Drop for Listed {
        fn drop(&mut self) {
            self.0.done(self.1);
        }
    }
    let _listed = Listed(reading, id);
    let mut closed = closed;
    let head = tokio::select! {
        head = tokio::time::timeout(READ_TIMEOUT, read_head) => head,
        _ = &mut closed => return,
    };
    if !matches!(head, Ok(Ok(()))) {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let (reply, receive) = oneshot::channel();
            if tx.send(Control::Metrics(reply)).is_err() {
                return;
            }
            match receive.await {
                Ok(text) => ("200 OK", text),
                Err(_) => ("503 Service Unavailable", "the daemon is shutting down\n".to_owned()),
            }
        }
        (_, "/metrics") => ("405 Method Not Allowed", "GET /metrics\n".to_owned()),
        _ => ("404 Not Found", "paddock serves /metrics only\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let send = async {
        write.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            write.write_all(body.as_bytes()).await?;
        }
        write.shutdown().await
    };
    // Closed to make room while it writes too: a client that never reads
    // an answer larger than the sockets' buffers holds its slot otherwise.
    tokio::select! {
        _ = tokio::time::timeout(WRITE_TIMEOUT, send) => {}
        _ = &mut closed => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections that send nothing, as many as are served at once, do
    /// not keep a scrape waiting until they time out: the oldest is closed
    /// to make room for it (it waited `READ_TIMEOUT`, 5 s, for each).
    /// Metrics served on a loopback port by a thread of their own, each
    /// answer `text`: the address, and the thread.
    /// One scrape of `addr`, read until the server closes it or `timeout`
    /// passes: how the read ended, and what came.
    fn scrape(addr: std::net::SocketAddr, timeout: Duration) -> (std::io::Result<usize>, String) {
        use std::io::{Read, Write};
        let mut scrape = std::net::TcpStream::connect(addr).unwrap();
        scrape.set_read_timeout(Some(timeout)).unwrap();
        scrape.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        let read = scrape.read_to_string(&mut answer);
        (read, answer)
    }

    fn serving(text: String) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(serve_metrics(listener, tx));
                while let Some(control) = rx.recv().await {
                    if let Control::Metrics(reply) = control {
                        let _ = reply.send(text.clone());
                    }
                }
            })
        });
        (addr, thread)
    }

    #[test]
    fn idle_connections_do_not_keep_a_scrape_out() {
        let (addr, thread) = serving("paddock_up 1\n".to_owned());
        let idle: Vec<std::net::TcpStream> =
            (0..MAX_CLIENTS + 8).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let (read, answer) = scrape(addr, READ_TIMEOUT / 2);
        assert!(read.is_ok() && answer.ends_with("paddock_up 1\n"), "{read:?}: {answer:?}");
        drop(idle);
        drop(thread);
    }

    /// Accepts that fail and succeed in turn (out of descriptors) are said
    /// once a minute, with a count of the spells between, not at each turn.
    #[test]
    fn accept_errors_that_come_and_go_are_said_once_a_minute() {
        let start = std::time::Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut f = AcceptFailures::default();
        assert_eq!(f.failed(at(0)), Some(0), "the first spell is said");
        assert_eq!(f.failed(at(0)), None, "once");
        assert!(f.accepted(), "and its end");
        assert!(!f.accepted(), "once");
        for s in [1, 2, 30] {
            assert_eq!(f.failed(at(s)), None, "a spell within the minute is counted");
            assert!(!f.accepted(), "its end is not said either");
        }
        assert_eq!(f.failed(at(61)), Some(3), "said again after a minute, with the spells between");
        assert!(f.accepted());
        // One within the minute that never ends is said once the minute is over.
        assert_eq!(f.failed(at(62)), None);
        assert_eq!(f.failed(at(100)), None);
        assert_eq!(f.failed(at(121)), Some(0), "said, a minute after the last said");
        assert_eq!(f.failed(at(200)), None, "once");
        assert_eq!(f.failed(at(3600)), None);
        assert!(f.accepted(), "and its end");
    }

    /// Clients that send their request and never read the answer (larger
    /// than the sockets' buffers: a host of many workloads), as many as are
    /// served at once, do not keep a scrape out for `WRITE_TIMEOUT` each:
    /// the oldest is closed to make room (helper-119).
    #[test]
    fn clients_that_never_read_their_answer_do_not_keep_a_scrape_out() {
        use std::io::Write;
        // Past what the server's send buffer (up to tcp_wmem's largest)
        // and the client's receive buffer (tcp_rmem's default, as it never
        // reads) hold, else each write ends at once.
        let sysctl = |name: &str, field: usize| -> usize {
            let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap();
            text.split_whitespace().nth(field).unwrap().parse().unwrap()
        };
        let past = sysctl("tcp_wmem", 2) + 2 * sysctl("tcp_rmem", 1) + (1 << 20);
        let (addr, thread) = serving(format!("{}paddock_up 1\n", "# padding\n".repeat(past / 10)));
        let deaf: Vec<std::net::TcpStream> = (0..MAX_CLIENTS)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let (read, answer) = scrape(addr, WRITE_TIMEOUT / 2);
        assert!(read.is_ok() && answer.ends_with("paddock_up 1\n"), "{read:?}: {} bytes", answer.len());
        drop(deaf);
        drop(thread);
    }

    /// As many idle connections as are served at once are all kept: room
    /// is made only for one more that comes (helper-112: the loop closed
    /// the oldest as soon as the last slot was taken, for no one).
    #[test]
    fn a_full_house_of_idle_connections_is_kept_until_another_comes() {
        use std::io::Read;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel::<Control>();
        let _thread = std::thread::spawn(move || runtime.block_on(serve_metrics(listener, tx)));
        let mut idle: Vec<std::net::TcpStream> =
            (0..MAX_CLIENTS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        // Open: a read finds nothing yet (an end would read 0 bytes).
        let open = |s: &mut std::net::TcpStream| {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            s.read(&mut [0; 1]).is_err()
        };
        let closed: Vec<usize> = (0..idle.len()).filter(|&i| !open(&mut idle[i])).collect();
        assert!(closed.is_empty(), "closed for no one: {closed:?}");
        // One more: the oldest makes room for it.
        let _more = std::net::TcpStream::connect(addr).unwrap();
        let waited = std::time::Instant::now();
        while open(&mut idle[0]) && waited.elapsed() < READ_TIMEOUT {}
        assert!(!open(&mut idle[0]), "the oldest closed for the newcomer");
        assert!((1..idle.len()).all(|i| open(&mut idle[i])), "only the oldest");
        drop(rx);
    }

    #[test]
    fn two_socket_paths_are_one_place_when_their_directories_resolve_to_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("run"), dir.path().join("var-run")).unwrap();
        let at = |p: &str| dir.path().join(p);
        assert!(same_place(&at("run/p.sock"), &at("run/p.sock")));
        assert!(same_place(&at("var-run/p.sock"), &at("run/p.sock")), "through a link to the directory");
        assert!(!same_place(&at("run/p.sock"), &at("run/q.sock")));
        assert!(!same_place(&at("gone/p.sock"), &at("other/p.sock")), "directories that do not resolve");
    }
}
