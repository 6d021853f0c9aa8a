//! The daemon's log under systemd, in journald's native protocol
//! (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>): one datagram of
//! `KEY=VALUE` fields per event, so an event is one entry however many
//! lines it has, with its priority. Its fields go twice: into `MESSAGE`,
//! as the stderr log writes them (`start failed workload=web error=...`),
//! so that `journalctl -u paddock` and `systemctl status` say which
//! workload and why; and as fields of their own (`WORKLOAD=web`), for
//! `journalctl WORKLOAD=web`. (tracing-journald, used before, puts the
//! fields only into fields of their own: the journal's text said "start
//! failed" and no more.)

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, UnixAddr};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// When an entry would not go as one datagram, it is sent again with its
/// message cut to this, and each of its other fields to `CUT_FIELD`.
const CUT: usize = 16 * 1024;
const CUT_FIELD: usize = 1024;

/// How long an entry waits for journald to take it (its socket's queue
/// full). The daemon logs from its event loop: a journald that takes
/// nothing would otherwise hold every restart, exit and answer with it.
/// (systemd's PID 1 waits 10 ms, its other programs 10 s.)
pub const PATIENCE: Duration = Duration::from_millis(100);

pub struct Journal {
    socket: UnixDatagram,
    /// Unconnected: each entry is sent to the path, which a restarted
    /// journald binds anew.
    to: UnixAddr,
    identifier: &'static str,
    /// Entries journald did not take since the last it took. While there
    /// are any, each entry is preceded by one saying how many were lost,
    /// sent without waiting: the entry is not sent (and is lost too)
    /// unless journald takes that.
    lost: AtomicU64,
}

impl Journal {
    /// A layer that sends to journald's socket at `path`; None where
    /// there is none to send to.
    pub fn new(path: impl AsRef<std::path::Path>, identifier: &'static str) -> Option<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return None;
        }
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_write_timeout(Some(PATIENCE)).ok()?;
        Some(Journal { socket, to: UnixAddr::new(path).ok()?, identifier, lost: AtomicU64::new(0) })
    }

    fn send(&self, entry: &[u8], wait: bool) -> nix::Result<()> {
        let flags = if wait { MsgFlags::empty() } else { MsgFlags::MSG_DONTWAIT };
        nix::sys::socket::sendto(self.socket.as_raw_fd(), entry, &self.to, flags).map(drop)
    }

    /// Sends an event's entry, cut if it is too long for one datagram.
    fn send_event(&self, level: &Level, target: &str, fields: &Fields, wait: bool) -> nix::Result<()> {
        match self.send(&entry(level, target, self.identifier, fields, false), wait) {
            Err(nix::errno::Errno::EMSGSIZE) => self.send(&entry(level, target, self.identifier, fields, true), wait),
            sent => sent,
        }
    }
}

/// An event's message and fields, as text and as journal fields.
#[derive(Default)]
struct Fields {
    message: String,
    /// ` name=value` for each field but the message, as the stderr log has them.
    shown: String,
    /// `(NAME, value)` for each field but the message.
    own: Vec<(String, String)>,
}

impl Fields {
    fn add(&mut self, field: &Field, shown: &str, raw: String) {
        let name = field.name().strip_prefix("r#").unwrap_or(field.name());
        let _ = write!(self.shown, " {name}={shown}");
        // journald drops a field whose name is not upper-case letters,
        // digits and `_`, starts with `_` (its own) or a digit, or is
        // longer than 64: cleaned first, then trimmed so.
        let own: String = name
            .bytes()
            .map(|c| if c == b'.' { b'_' } else { c })
            .filter(|c| *c == b'_' || c.is_ascii_alphanumeric())
            .skip_while(|c| *c == b'_' || c.is_ascii_digit())
            .take(64)
            .map(|c| char::from(c.to_ascii_uppercase()))
            .collect();
        // Never one of the entry's own (an event's `priority`, say).
        if !own.is_empty() && !matches!(own.as_str(), "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "TARGET") {
            self.own.push((own, raw));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.add(field, &format!("{value:?}"), value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.add(field, &text, text.clone());
        }
    }
}

/// Appends one field: `NAME=value\n`, or, for a value with a newline,
/// `NAME\n`, its length (64 bits, little-endian), the value and `\n`.
fn put(entry: &mut Vec<u8>, name: &str, value: &str) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value.as_bytes());
    entry.push(b'\n');
}

fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "5",
        Level::DEBUG => "6",
        Level::TRACE => "7",
    }
}

/// `text`, or its first `max` bytes (at a character's boundary) saying so.
fn cut_to(text: &str, max: Option<usize>) -> std::borrow::Cow<'_, str> {
    match max.filter(|m| text.len() > *m) {
        None => text.into(),
        Some(mut at) => {
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            format!("{} (cut: too long for one journal entry)", &text[..at]).into()
        }
    }
}

/// The entry of an event whose `Fields` are `fields`; `cut`, its values
/// cut (`CUT`, `CUT_FIELD`).
fn entry(level: &Level, target: &str, identifier: &str, fields: &Fields, cut: bool) -> Vec<u8> {
    let message = format!("{}{}", fields.message, fields.shown);
    let message = cut_to(&message, cut.then_some(CUT));
    let mut entry = Vec::with_capacity(message.len() + 256);
    put(&mut entry, "PRIORITY", priority(level));
    put(&mut entry, "SYSLOG_IDENTIFIER", identifier);
    put(&mut entry, "MESSAGE", &message);
    put(&mut entry, "TARGET", target);
    for (name, value) in &fields.own {
        put(&mut entry, name, &cut_to(value, cut.then_some(CUT_FIELD)));
    }
    entry
}

impl<S: Subscriber> Layer<S> for Journal {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        // Taken whole, so that of threads logging at once one alone says
        // it (each saying what it had loaded said it twice, and each
        // subtracting it wrapped the count round).
        let lost = self.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let said = Fields {
                message: format!(
                    "{lost} log entries were lost: journald did not take them (stopped, restarting, or taking none for {} ms)",
                    PATIENCE.as_millis()
                ),
                own: vec![("LOST".to_owned(), lost.to_string())],
                ..Fields::default()
            };
            if self.send_event(&Level::WARN, module_path!(), &said, false).is_err() {
                // Not waited for again: journald still takes nothing. Given
                // back, with this entry.
                self.lost.fetch_add(lost + 1, Ordering::Relaxed);
                return;
            }
        }
        // Nowhere to say that an entry could not be sent but the next
        // entry journald takes.
        if self.send_event(meta.level(), meta.target(), &fields, true).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    /// The fields of one entry, in order.
    fn parse(mut entry: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        while !entry.is_empty() {
            let line = entry.iter().position(|b| *b == b'\n').unwrap();
            let head = std::str::from_utf8(&entry[..line]).unwrap();
            if let Some((name, value)) = head.split_once('=') {
                fields.push((name.to_owned(), value.to_owned()));
                entry = &entry[line + 1..];
            } else {
                let len = u64::from_le_bytes(entry[line + 1..line + 9].try_into().unwrap()) as usize;
                let value = std::str::from_utf8(&entry[line + 9..line + 9 + len]).unwrap();
                assert_eq!(entry[line + 9 + len], b'\n');
                fields.push((head.to_owned(), value.to_owned()));
                entry = &entry[line + 10 + len..];
            }
        }
        fields
    }

    /// What `log` sends, each entry as its fields.
    fn sent(log: impl FnOnce()) -> Vec<Vec<(String, String)>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        journald.set_nonblocking(true).unwrap();
        let layer = Journal::new(&path, "paddock").unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        let mut entries = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = journald.recv(&mut buf) {
            entries.push(parse(&buf[..n]));
        }
        entries
    }

    fn field<'a>(entry: &'a [(String, String)], name: &str) -> Option<&'a str> {
        entry.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `journalctl -u paddock` shows which workload and why, as stderr
    /// does, and `journalctl WORKLOAD=web` finds it (helper-103).
    #[test]
    fn an_entry_says_its_fields_in_its_message_and_as_fields() {
        let entries = sent(|| {
            let name = "web";
            tracing::error!(workload = %name, action = "start", error = %"no plugin\nin /usr/lib/cni", "start failed");
            tracing::info!("plain");
        });
        assert_eq!(entries.len(), 2, "{entries:?}");
        let failed = &entries[0];
        assert_eq!(
            field(failed, "MESSAGE"),
            Some("start failed workload=web action=\"start\" error=no plugin\nin /usr/lib/cni")
        );
        assert_eq!(field(failed, "PRIORITY"), Some("3"));
        assert_eq!(field(failed, "SYSLOG_IDENTIFIER"), Some("paddock"));
        assert_eq!(field(failed, "WORKLOAD"), Some("web"));
        assert_eq!(field(failed, "ACTION"), Some("start"), "the value as it is, not quoted");
        assert_eq!(field(failed, "ERROR"), Some("no plugin\nin /usr/lib/cni"), "a value of lines, whole");
        assert_eq!(field(&entries[1], "MESSAGE"), Some("plain"));
        assert_eq!(field(&entries[1], "PRIORITY"), Some("5"));
    }

    /// A field named as one of the entry's own does not stand for it.
    #[test]
    fn an_events_field_never_replaces_the_entrys_own() {
        let entries = sent(|| tracing::warn!(priority = 7, message_id = "x", "careful"));
        let priorities: Vec<_> = entries[0].iter().filter(|(n, _)| n == "PRIORITY").collect();
        assert_eq!(priorities.len(), 1);
        assert_eq!(field(&entries[0], "PRIORITY"), Some("4"));
        assert_eq!(field(&entries[0], "MESSAGE_ID"), Some("x"));
    }

    /// An entry too long for one datagram goes cut, its fields kept
    /// (`journalctl WORKLOAD=web` finds it), rather than not at all.
    #[test]
    fn an_entry_too_long_for_a_datagram_goes_cut_with_its_fields() {
        let long = "é".repeat(2 << 20);
        let entries = sent(|| tracing::error!(workload = "web", error = %long, "{long}"));
        assert_eq!(entries.len(), 1);
        let message = field(&entries[0], "MESSAGE").unwrap();
        assert!(message.len() < CUT + 100 && message.ends_with("(cut: too long for one journal entry)"));
        assert_eq!(field(&entries[0], "WORKLOAD"), Some("web"));
        assert!(field(&entries[0], "ERROR").unwrap().len() < CUT_FIELD + 100);
    }

    /// A journald that takes nothing (its socket's queue full) holds the
    /// daemon's loop for one entry's `PATIENCE`, not for each entry nor
    /// forever; the next entry it takes is preceded by one saying how many
    /// were lost.
    #[test]
    fn a_journald_that_takes_nothing_holds_the_daemon_once_and_hears_what_was_lost() {
        const EVENTS: usize = 1000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        journald.set_nonblocking(true).unwrap();
        let dispatch =
            tracing::Dispatch::new(tracing_subscriber::registry().with(Journal::new(&path, "paddock").unwrap()));
        let (done, finished) = std::sync::mpsc::channel();
        let logging = dispatch.clone();
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&logging, || (0..EVENTS).for_each(|i| tracing::info!(i, "busy")));
            let _ = done.send(());
        });
        // Waiting PATIENCE for each would take 100 s; blocking, forever.
        finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("1000 entries to a journald that takes nothing were not all sent (or given up) in 30 s");
        let mut buf = vec![0u8; 1 << 16];
        let mut taken = 0;
        while journald.recv(&mut buf).is_ok() {
            taken += 1;
        }
        assert!(taken > 0 && taken < EVENTS, "the socket's queue took {taken} of {EVENTS}");

        tracing::dispatcher::with_default(&dispatch, || tracing::info!("after"));
        let mut next = || {
            let n = journald.recv(&mut buf).expect("an entry");
            parse(&buf[..n])
        };
        let said = next();
        let lost = (EVENTS - taken).to_string();
        assert_eq!(field(&said, "LOST"), Some(lost.as_str()), "{said:?}");
        assert_eq!(field(&said, "PRIORITY"), Some("4"));
        assert!(field(&said, "MESSAGE").unwrap().starts_with(&format!("{lost} log entries were lost")), "{said:?}");
        assert_eq!(field(&next(), "MESSAGE"), Some("after"));
    }

    /// Entries sent while journald is gone (stopped, restarting) are
    /// counted too, and said when it is back.
    #[test]
    fn entries_sent_while_journald_is_gone_are_said_when_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        let dispatch =
            tracing::Dispatch::new(tracing_subscriber::registry().with(Journal::new(&path, "paddock").unwrap()));
        drop(journald);
        std::fs::remove_file(&path).unwrap();
        tracing::dispatcher::with_default(&dispatch, || (0..3).for_each(|i| tracing::info!(i, "while gone")));
        let journald = UnixDatagram::bind(&path).unwrap();
        journald.set_nonblocking(true).unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("back"));
        let mut buf = vec![0u8; 1 << 16];
        let mut next = || {
            let n = journald.recv(&mut buf).expect("an entry");
            parse(&buf[..n])
        };
        assert_eq!(field(&next(), "LOST"), Some("3"));
        assert_eq!(field(&next(), "MESSAGE"), Some("back"));
    }

    /// Entries lost are said once, by one thread, whichever threads log
    /// when journald is back: the daemon logs from its workers, notify's
    /// thread and its loop at once.
    #[test]
    fn lost_entries_are_said_once_by_threads_logging_at_once() {
        const THREADS: usize = 4;
        const LOST: u64 = 5;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let dispatch = {
            let _journald = UnixDatagram::bind(&path).unwrap();
            tracing::Dispatch::new(tracing_subscriber::registry().with(Journal::new(&path, "paddock").unwrap()))
        };
        let mut buf = vec![0u8; 1 << 16];
        for round in 0..200 {
            let _ = std::fs::remove_file(&path);
            tracing::dispatcher::with_default(&dispatch, || (0..LOST).for_each(|i| tracing::info!(i, "while gone")));
            let journald = UnixDatagram::bind(&path).unwrap();
            journald.set_nonblocking(true).unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (dispatch, barrier) = (dispatch.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        tracing::dispatcher::with_default(&dispatch, || {
                            barrier.wait();
                            tracing::info!("back");
                        })
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            let mut said = Vec::new();
            while let Ok(n) = journald.recv(&mut buf) {
                if let Some(lost) = field(&parse(&buf[..n]), "LOST") {
                    said.push(lost.to_owned());
                }
            }
            assert_eq!(said, [LOST.to_string()], "round {round}: the losses said");
        }
    }

    /// A field name journald would drop is made one it keeps.
    #[test]
    fn field_names_are_made_ones_journald_keeps() {
        let entries = sent(|| tracing::info!(_9é_x = 1, "odd"));
        assert_eq!(field(&entries[0], "X"), Some("1"), "{:?}", entries[0]);
    }
}
