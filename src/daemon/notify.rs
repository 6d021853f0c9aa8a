//! systemd's readiness protocol (sd_notify): datagrams such as `READY=1`,
//! `STATUS=...`, `RELOADING=1`, `STOPPING=1` and `WATCHDOG=1` to the socket
//! in NOTIFY_SOCKET. Without NOTIFY_SOCKET (not under systemd) every call is
//! a no-op. The variables are read once; workloads never see them, since
//! the sandbox's init starts with an empty environment.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The longest a notification may wait for room on the socket.
const SEND_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
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
        Self { target: None, watchdog: None }
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
                // A reader that stops reading (its queue holds 10 datagrams,
                // net.unix.max_dgram_qlen) must not stop the event loop: a
                // message that cannot be queued within SEND_TIMEOUT is dropped.
                sock.set_write_timeout(Some(SEND_TIMEOUT))?;
                Some((sock, addr))
            }
        };
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().is_ok_and(|p| p == own_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            // Ping at half the timeout, as sd_watchdog_enabled(3) advises.
            .map(|u| Duration::from_micros(u / 2));
        Ok(Self { target, watchdog })
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`, when systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message, e.g. "READY=1\nSTATUS=3 running".
    pub fn notify(&self, message: &str) -> std::io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(message.as_bytes(), addr).map(drop),
            None => Ok(()),
        }
    }
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
    fn a_reader_that_stops_reading_never_blocks_the_sender_for_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let _listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()), None, None, 1).unwrap();
        let start = std::time::Instant::now();
        let refused = (0..13).filter(|_| n.notify("STATUS=1 running").is_err()).count();
        assert!(refused > 0, "the queue never filled");
        // 250 ms per refused message at most, never forever.
        assert!(start.elapsed() < SEND_TIMEOUT * (refused as u32 + 2), "{:?}", start.elapsed());
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
    }
}
