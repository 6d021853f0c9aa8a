//! systemd's readiness protocol (sd_notify): datagrams such as `READY=1`,
//! `STATUS=...`, `RELOADING=1`, `STOPPING=1` and `WATCHDOG=1` to the socket
//! in NOTIFY_SOCKET. Without NOTIFY_SOCKET (not under systemd) every call is
//! a no-op. The variables are read once; workloads never see them, since
//! the sandbox's init starts with an empty environment.
//!
//! Sending never blocks the event loop. The reader's queue holds
//! `net.unix.max_dgram_qlen` datagrams (10 by default); while systemd does
//! not read (PID 1 busy, say, in a long daemon-reload) a message that finds
//! no room waits in a backlog, sent in order before anything newer. A lone
//! `STATUS=` replaces a lone `STATUS=` just before it; a `WATCHDOG=1` that
//! finds no room is dropped (the next one says the same); the backlog
//! holds `BACKLOG` messages at most (`keep` says which go), and what is
//! left of it when the process exits or execs (after `settle`) is lost.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::time::Duration;

/// How often a backlog is tried again while nothing else is sent.
pub const RETRY: Duration = Duration::from_millis(50);

/// The most messages a backlog holds; the oldest go first.
const BACKLOG: usize = 32;

const WATCHDOG: &str = "WATCHDOG=1";

#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    /// What found no room yet, oldest first.
    backlog: Mutex<VecDeque<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither a path nor an abstract socket (@name)")]
    BadAddress(String),
    #[error("NOTIFY_SOCKET: {0}")]
    Socket(#[from] std::io::Error),
}

impl Notifier {
    /// A notifier that does nothing (no systemd).
    pub fn disabled() -> Self {
        Self { target: None, watchdog: None, backlog: Mutex::default() }
    }

    /// From this process's environment.
    pub fn from_env() -> Result<Self, NotifyError> {
        let var = |k: &str| std::env::var_os(k);
        let usec = var("WATCHDOG_USEC");
        let pid = var("WATCHDOG_PID");
        Self::new(
            var("NOTIFY_SOCKET").as_deref(),
            usec.as_deref().and_then(OsStr::to_str),
            pid.as_deref().and_then(OsStr::to_str),
            std::process::id(),
        )
    }

    /// `socket` as NOTIFY_SOCKET gives it: a path, or `@name` for an
    /// abstract socket. The watchdog applies when WATCHDOG_USEC is set and
    /// WATCHDOG_PID, if set, is this process.
    pub fn new(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Result<Self, NotifyError> {
        let target = match socket.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let bytes = s.as_bytes();
                let addr = match bytes.first() {
                    Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
                    Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(s))?,
                    _ => return Err(NotifyError::BadAddress(s.to_string_lossy().into_owned())),
                };
                let sock = UnixDatagram::unbound()?;
                // A reader that stops reading must not stop the event loop.
                sock.set_nonblocking(true)?;
                Some((sock, addr))
            }
        };
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().is_ok_and(|p| p == own_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            // Ping at half the timeout, as sd_watchdog_enabled(3) advises;
            // at most every millisecond (half of 1 us is no period at all).
            .map(|u| Duration::from_micros(u / 2).max(Duration::from_millis(1)));
        Ok(Self { target, watchdog, backlog: Mutex::default() })
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`, when systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message, e.g. "READY=1\nSTATUS=3 running", after what
    /// is left of earlier ones; without room for it, it is kept for later
    /// (see the module's comment). An error is one the socket gave (its
    /// reader gone, say): that message is dropped.
    pub fn notify(&self, message: &str) -> std::io::Result<()> {
        let Some((sock, addr)) = &self.target else { return Ok(()) };
        let mut backlog = self.backlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let drained = drain(sock, addr, &mut backlog);
        if backlog.is_empty() {
            match sock.send_to_addr(message.as_bytes(), addr) {
                Ok(_) => return drained,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        keep(&mut backlog, message);
        drained
    }

    /// Whether messages wait for room (the event loop then calls `flush`
    /// every `RETRY`).
    pub fn backlogged(&self) -> bool {
        !self.backlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Sends what it can of the backlog, without waiting.
    pub fn flush(&self) {
        if let Some((sock, addr)) = &self.target {
            let mut backlog = self.backlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = drain(sock, addr, &mut backlog);
        }
    }

    /// Before this image is gone (an exec, the exit): the backlog is given
    /// up to `limit` to find room.
    pub async fn settle(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        self.flush();
        while self.backlogged() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.flush();
        }
    }
}

/// Sends the backlog's messages in order until one finds no room. A
/// message the socket refuses otherwise is dropped (and its error given).
fn drain(sock: &UnixDatagram, addr: &SocketAddr, backlog: &mut VecDeque<String>) -> std::io::Result<()> {
    let mut result = Ok(());
    while let Some(message) = backlog.front() {
        match sock.send_to_addr(message.as_bytes(), addr) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Ok(_) => {}
            Err(e) => result = Err(e),
        }
        backlog.pop_front();
    }
    result
}

/// Keeps a message that found no room: a ping is dropped (the next says
/// the same), a `STATUS=` alone replaces one alone just before it. A full
/// backlog loses its oldest `STATUS=` alone first (a later state says
/// more), else its oldest message.
fn keep(backlog: &mut VecDeque<String>, message: &str) {
    let status_only = |m: &str| m.starts_with("STATUS=") && !m.contains('\n');
    if message == WATCHDOG {
        return;
    }
    if status_only(message) && backlog.back().is_some_and(|last| status_only(last)) {
        backlog.pop_back();
    }
    if backlog.len() == BACKLOG {
        match backlog.iter().position(|m| status_only(m)) {
            Some(i) => backlog.remove(i),
            None => backlog.pop_front(),
        };
    }
    backlog.push_back(message.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_in_order_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()), None, None, 1).unwrap();
        assert!(n.enabled());
        for m in ["READY=1\nSTATUS=2 running", "RELOADING=1", "READY=1", "STOPPING=1"] {
            n.notify(m).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..4 {
            let len = listener.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(got, ["READY=1\nSTATUS=2 running", "RELOADING=1", "READY=1", "STOPPING=1"]);
    }

    #[test]
    fn a_reader_that_stops_reading_never_blocks_the_sender_and_gets_the_rest_in_order_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()), None, None, 1).unwrap();
        let start = std::time::Instant::now();
        // Far more than its queue holds (net.unix.max_dgram_qlen, 10 by default).
        let filler: Vec<String> = (0..600).map(|i| format!("STATUS={i} running")).collect();
        for m in &filler {
            n.notify(m).unwrap();
        }
        assert!(n.backlogged(), "the queue never filled");
        for m in ["READY=1\nSTATUS=one", WATCHDOG, "STATUS=two", "STATUS=three", "STOPPING=1", "STATUS=four"] {
            n.notify(m).unwrap();
        }
        // (Blocking, each of the 600 would have waited.)
        assert!(start.elapsed() < Duration::from_secs(2), "sending waited: {:?}", start.elapsed());
        // The reader reads again: what waited comes in order, only the
        // latest of a run of STATUS= lines, no stale ping.
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        listener.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        while got.last().is_none_or(|m| m != "STATUS=four") {
            match listener.recv(&mut buf) {
                Ok(len) => got.push(String::from_utf8_lossy(&buf[..len]).into_owned()),
                Err(_) => n.flush(),
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never got it all: {got:?}");
        }
        assert!(!n.backlogged());
        let tail: Vec<&str> = got.iter().skip_while(|m| !m.starts_with("READY=1")).map(String::as_str).collect();
        assert_eq!(tail, ["READY=1\nSTATUS=one", "STATUS=three", "STOPPING=1", "STATUS=four"]);
        assert_eq!(got.first().map(String::as_str), Some("STATUS=0 running"), "sent in order from the first");
    }

    #[test]
    fn a_full_backlog_gives_up_a_status_before_a_state_change() {
        let mut backlog = VecDeque::new();
        keep(&mut backlog, "READY=1\nSTATUS=up");
        for i in 0..BACKLOG {
            keep(&mut backlog, if i % 2 == 0 { "RELOADING=1" } else { "STATUS=between" });
        }
        assert_eq!(backlog.len(), BACKLOG);
        keep(&mut backlog, "STOPPING=1");
        assert_eq!(backlog.front().map(String::as_str), Some("READY=1\nSTATUS=up"), "a state change is kept");
        assert_eq!(backlog.back().map(String::as_str), Some("STOPPING=1"));
        // Two of the sixteen gave way, to the 33rd and the 34th.
        assert_eq!(backlog.iter().filter(|m| *m == "STATUS=between").count(), BACKLOG / 2 - 2);
    }

    #[test]
    fn abstract_sockets_work_too() {
        let name = format!("paddock-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::new(Some(OsStr::new(&format!("@{name}"))), None, None, 1).unwrap();
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 16];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn without_systemd_nothing_is_sent_and_nothing_fails() {
        let n = Notifier::new(None, None, None, 1).unwrap();
        assert!(!n.enabled());
        n.notify("READY=1").unwrap();
        assert!(matches!(Notifier::new(Some(OsStr::new("relative")), None, None, 1), Err(NotifyError::BadAddress(_))));
    }

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_and_only_for_us() {
        let n = Notifier::new(None, Some("10000000"), None, 42).unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        assert_eq!(
            Notifier::new(None, Some("10000000"), Some("42"), 42).unwrap().watchdog_interval(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(Notifier::new(None, Some("10000000"), Some("7"), 42).unwrap().watchdog_interval(), None);
        assert_eq!(Notifier::new(None, Some("0"), None, 42).unwrap().watchdog_interval(), None);
        // A timer of no period panics (helper-102).
        let tiny = Notifier::new(None, Some("1"), None, 42).unwrap().watchdog_interval();
        assert_eq!(tiny, Some(Duration::from_millis(1)));
    }
}
