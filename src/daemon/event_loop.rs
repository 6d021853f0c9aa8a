//! The daemon's event loop on a single-threaded tokio runtime: file
//! events (debounced inotify, plus a periodic resync), signals, exits,
//! timers and control requests all arrive on one channel or select arm,
//! and each ends in a rescan and/or a reconcile.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use super::status::{Request, Response};
use super::supervisor::{Event, Supervisor};

/// Tens of milliseconds: an editor's write-then-rename (microseconds apart)
/// lands as one change, and reload latency stays low (bench/daemon.py).
const DEBOUNCE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("starting the event loop: {0}")]
    Runtime(std::io::Error),
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: std::io::Error },
    #[error("control socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("another paddock daemon is listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error("metrics_listen {addr}: {source}")]
    Metrics { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("state directory: {0}")]
    State(std::io::Error),
    #[error("signals: {0}")]
    Signals(std::io::Error),
}

/// Runs until SIGTERM or SIGINT, then stops every workload and returns.
pub fn run(
    supervisor: impl FnOnce(mpsc::UnboundedSender<Event>) -> Supervisor,
    workloads: &Path,
    socket: &Path,
    resync: Duration,
    watchdog: Option<Duration>,
    metrics: Option<std::net::SocketAddr>,
) -> Result<(), LoopError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(LoopError::Runtime)?;
    runtime.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Requests have a channel of their own, heard first: a status answer
        // never waits behind a thousand exits.
        let (control_tx, mut control) = mpsc::unbounded_channel();
        let mut sup = supervisor(tx.clone());
        // Before anything starts, and before the socket says a daemon is here.
        sup.recover().map_err(LoopError::State)?;
        let mut watch = Watch::new(workloads)?;
        let listener = bind(socket)?;
        if let Some(addr) = metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| LoopError::Metrics { addr, source })?;
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            tokio::spawn(serve_metrics(listener, control_tx.clone()));
        }
        tokio::spawn(serve(listener, control_tx));
        let (mut hup, mut term, mut int) = (
            signal(SignalKind::hangup()).map_err(LoopError::Signals)?,
            signal(SignalKind::terminate()).map_err(LoopError::Signals)?,
            signal(SignalKind::interrupt()).map_err(LoopError::Signals)?,
        );
        sup.rescan("start");
        sup.reconcile();
        sup.ready();
        let mut resync = tokio::time::interval(resync);
        resync.tick().await;
        let mut watchdog = watchdog.map(tokio::time::interval);
        let mut shutting_down = false;
        // Events only mark the plan stale; one reconcile runs once the queue
        // is drained (level-triggered: it looks at everything anyway).
        let mut stale = false;
        let mut debounce: Option<tokio::time::Instant> = None;
        loop {
            let wake = sup.wake_at();
            tokio::select! {
                biased;
                Some(control) = control.recv() => match control {
                    Control::Metrics(reply) => { let _ = reply.send(sup.metrics()); }
                    Control::Ask(_, reply) if shutting_down => {
                        let _ = reply.send(Response::Error("the daemon is shutting down".to_owned()));
                    }
                    Control::Ask(Request::Reload, reply) => {
                        tracing::info!("reload asked on the control socket: rescanning");
                        sup.notify("RELOADING=1");
                        let invalid = sup.rescan("reload");
                        watch.rearm();
                        let mut report = sup.reconcile();
                        report.invalid = invalid;
                        sup.ready();
                        let _ = reply.send(Response::Reloaded(report));
                    }
                    Control::Ask(request, reply) => {
                        let (response, changed) = sup.answer(request);
                        stale |= changed;
                        let _ = reply.send(response);
                    }
                },
                // The first change of a burst: rescan once it has settled.
                () = watch.changed(), if !shutting_down => {
                    if debounce.is_none() { debounce = Some(tokio::time::Instant::now() + DEBOUNCE); }
                }
                Some(event) = rx.recv() => match event {
                    Event::Reconcile => stale = !shutting_down,
                    Event::Exited { name, pid } => { sup.exited(&name, pid); stale = !shutting_down; }
                    Event::StopTimeout { name, pid } => sup.stop_timeout(&name, pid),
                },
                _ = hup.recv(), if !shutting_down => {
                    tracing::info!("SIGHUP: rescanning");
                    sup.notify("RELOADING=1");
                    sup.rescan("SIGHUP");
                    watch.rearm();
                    sup.reconcile();
                    sup.ready();
                }
                _ = term.recv(), if !shutting_down => { tracing::info!("SIGTERM: stopping every workload"); shutting_down = true; sup.begin_shutdown(); }
                _ = int.recv(), if !shutting_down => { tracing::info!("SIGINT: stopping every workload"); shutting_down = true; sup.begin_shutdown(); }
                _ = async { tokio::time::sleep_until(debounce.unwrap()).await }, if debounce.is_some() && !shutting_down => {
                    debounce = None;
                    // A change during the scan is read after it and makes another round.
                    sup.rescan("inotify");
                    watch.rearm();
                    stale = true;
                }
                _ = resync.tick(), if !shutting_down => { sup.rescan("resync"); watch.rearm(); stale = true; }
                _ = async { tokio::time::sleep_until(wake.unwrap().into()).await }, if wake.is_some() && !shutting_down => stale = true,
                _ = async { watchdog.as_mut().unwrap().tick().await }, if watchdog.is_some() => sup.notify("WATCHDOG=1"),
            }
            if stale && rx.is_empty() && control.is_empty() {
                stale = false;
                sup.reconcile();
                // A pass cut short queues the next at once; without a yield the
                // tasks that read the control socket would never run meanwhile.
                tokio::task::yield_now().await;
            }
            if shutting_down && sup.all_stopped() {
                break;
            }
        }
        let _ = std::fs::remove_file(socket);
        Ok(())
    })
}

/// inotify on the directory's target and on the directory's parent. A
/// directory that is a symlink swapped to a new target (as Kubernetes
/// ConfigMaps do) changes nothing in the old target, only in the parent;
/// `rearm` then moves the first watch to the new target.
///
/// The inotify descriptor is read on the event loop itself: no watcher
/// thread, so the daemon stays single-threaded and a sandbox's init can
/// run in the clone child instead of re-executing paddock. No debouncer
/// either: a rescan compares whole files, so all the loop needs is
/// "something changed", once per burst, and it rescans `DEBOUNCE` later.
/// Nothing wakes while nothing happens.
struct Watch {
    inotify: AsyncFd<InotifyFd>,
    dir: PathBuf,
    /// The resolved directory being watched, and its watch.
    target: PathBuf,
    target_watch: Option<WatchDescriptor>,
    /// The parent's watch, which matters only for the directory's own
    /// entry (`entry`): other files beside it (a log, a socket, the
    /// configuration) are none of the watcher's business.
    parent_watch: Option<WatchDescriptor>,
    entry: Option<std::ffi::OsString>,
}

struct InotifyFd(Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0.as_fd())
    }
}

/// What changes a directory's entries or a file's content. Not IN_ACCESS,
/// IN_OPEN or IN_CLOSE_NOWRITE: the daemon's own reads of manifests would
/// wake it forever.
fn watch_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl Watch {
    fn new(dir: &Path) -> Result<Self, LoopError> {
        let err = |source: std::io::Error| LoopError::Watch { path: dir.to_owned(), source };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| err(e.into()))?;
        let target = std::fs::canonicalize(dir).map_err(err)?;
        let target_watch = Some(inotify.add_watch(&target, watch_mask()).map_err(|e| err(e.into()))?);
        let parent_watch = match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => Some(inotify.add_watch(parent, watch_mask()).map_err(|e| err(e.into()))?),
            None => None,
        };
        // SAFETY: InotifyFd owns the descriptor and always returns the same
        // one; it is closed only when the AsyncFd that owns it is dropped.
        let registered = unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), tokio::io::Interest::READABLE) };
        let inotify = registered.map_err(|e| err(e.into()))?;
        let entry = dir.file_name().map(ToOwned::to_owned);
        Ok(Watch { inotify, dir: dir.to_owned(), target, target_watch, parent_watch, entry })
    }

    /// Waits until a batch of events holds a change (an error counts as
    /// one). Batches of nothing but the parent's other files are read and
    /// dropped here: a select branch that completed without a change would
    /// stop reading the descriptor until another branch woke the loop.
    async fn changed(&self) {
        loop {
            let mut ready = match self.inotify.readable().await {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::warn!(%error, "watch error; rescanning everything");
                    return;
                }
            };
            match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => {
                    if events.iter().any(|e| e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)) {
                        tracing::warn!(
                            "the inotify queue overflowed (fs.inotify.max_queued_events); rescanning everything"
                        );
                    }
                    let ours = |e: &nix::sys::inotify::InotifyEvent| {
                        Some(e.wd) != self.parent_watch || e.name.is_some() && e.name == self.entry
                    };
                    if events.iter().any(ours) {
                        return;
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "watch error; rescanning everything");
                    return;
                }
                // Spurious readiness: wait again.
                Err(_would_block) => continue,
            }
        }
    }

    /// After a rescan: if the directory now resolves elsewhere, watch there.
    fn rearm(&mut self) {
        let Ok(target) = std::fs::canonicalize(&self.dir) else { return };
        if target == self.target {
            return;
        }
        let inotify = &self.inotify.get_ref().0;
        // The old target may be gone already; its watch went with it.
        if let Some(wd) = self.target_watch.take() {
            let _ = inotify.rm_watch(wd);
        }
        match inotify.add_watch(&target, watch_mask()) {
            Ok(wd) => {
                self.target_watch = Some(wd);
                tracing::info!(dir = %self.dir.display(), target = %target.display(), "the workloads directory moved; watching its new target")
            }
            Err(e) => {
                tracing::error!(dir = %target.display(), error = %e, "cannot watch the new target; only the periodic resync will see its changes")
            }
        }
        self.target = target;
    }
}

/// The control socket: mode 0600 in a directory paddock creates. A stale
/// socket from a daemon that died is replaced; a live one is an error.
fn bind(path: &Path) -> Result<UnixListener, LoopError> {
    let err = |source| LoopError::Socket { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(LoopError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// What reaches the loop from its tasks: a request from the control
/// socket, or the metrics listener asking for the current figures.
enum Control {
    Ask(Request, oneshot::Sender<Response>),
    Metrics(oneshot::Sender<String>),
}

async fn serve(listener: UnixListener, tx: mpsc::UnboundedSender<Control>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream, tx.clone()));
    }
}

/// One JSON request line, one JSON response line. Only root may ask
/// (checked on the peer's credentials, beside the socket's mode).
async fn answer(stream: UnixStream, tx: mpsc::UnboundedSender<Control>) {
    let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let response = if !root {
        Response::Error("permission denied: the control socket is root's".to_owned())
    } else if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (reply, receive) = oneshot::channel();
                if tx.send(Control::Ask(request, reply)).is_err() {
                    return;
                }
                receive.await.unwrap_or_else(|_| Response::Error("the daemon is shutting down".to_owned()))
            }
            Err(e) => Response::Error(format!("bad request: {e}")),
        }
    };
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

/// A minimal HTTP/1.1 server for one resource: `GET /metrics` answers the
/// Prometheus text format; anything else is 404 (or 405 for other methods).
async fn serve_metrics(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Control>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer_metrics(stream, tx.clone()));
    }
}

async fn answer_metrics(stream: tokio::net::TcpStream, tx: mpsc::UnboundedSender<Control>) {
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
    if !matches!(tokio::time::timeout(Duration::from_secs(5), read_head).await, Ok(Ok(()))) {
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
    let _ = write.write_all(head.as_bytes()).await;
    if method != "HEAD" {
        let _ = write.write_all(body.as_bytes()).await;
    }
    let _ = write.shutdown().await;
}
