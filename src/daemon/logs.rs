//! A workload's captured stdout and stderr: one file per workload in the
//! state directory, capped in size and rotated (`NAME.log`, `NAME.log.1`,
//! ...), so that nothing a workload prints before it crashes is lost and
//! nothing it prints can fill the disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::timefmt::{parse_rfc3339, rfc3339};

/// Largest log file before it is rotated, and how many old ones are kept
/// (`paddock logs` reads them all).
pub const LOG_MAX_BYTES: u64 = 10 << 20;
pub const LOG_KEEP: usize = 3;

/// A log that cannot be written is said at most this often.
const LOG_COMPLAINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Each line of a log file starts with the time its first byte arrived and
/// a space: `2026-11-23T05:20:00.123456Z hello`. `paddock logs` strips it
/// unless asked (`--timestamps`) and filters on it (`--since`).
#[derive(Debug, Default)]
pub struct Stamper {
    mid_line: bool,
}

impl Stamper {
    /// Appends `chunk` to `out`, each new line prefixed with `now`.
    pub fn stamp(&mut self, chunk: &[u8], now: SystemTime, out: &mut Vec<u8>) {
        let prefix = rfc3339(now);
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if !self.mid_line {
                out.extend_from_slice(prefix.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(piece);
            self.mid_line = !piece.ends_with(b"\n");
        }
    }

    /// At the end of a run: a last line without its newline gets one, so
    /// the next run's first line starts a line of its own.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.mid_line) {
            out.push(b'\n');
        }
    }
}

/// A log line's time and text (None for a line without a time).
pub fn split_line(line: &str) -> (Option<SystemTime>, &str) {
    match line.split_once(' ') {
        Some((stamp, text)) => match parse_rfc3339(stamp) {
            Some(t) => (Some(t), text),
            None => (None, line),
        },
        None => (None, line),
    }
}

/// A workload's log files, oldest first: `NAME.log.KEEP` ... `NAME.log.1`, `NAME.log`.
pub fn files_oldest_first(path: &Path, keep: usize) -> Vec<PathBuf> {
    (1..=keep).rev().map(|n| numbered(path, n)).chain([path.to_owned()]).filter(|p| p.exists()).collect()
}

#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    written: u64,
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingLog {
    /// Appends to `path`; past `max_bytes` the file becomes `path.1` (and
    /// `path.1` becomes `path.2`, ...), keeping `keep` old files.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), max_bytes, keep, file, written })
    }

    /// Writes `bytes` whole: a write that would cross the cap goes to a
    /// fresh file (a line is never split across two files).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

/// Copies a sandbox's output into its log until the sandbox closes it.
/// The buffer lives only between a readiness and its read, never across an
/// await, so an idle sandbox costs the daemon no buffer (1000 idle
/// sandboxes with a 64 KiB buffer each were 64 MiB of RSS).
pub async fn copy_to_log(read: OwnedFd, path: PathBuf) {
    let (pipe, mut log) = match (
        tokio::net::unix::pipe::Receiver::from_owned_fd(read),
        RotatingLog::open(&path, LOG_MAX_BYTES, LOG_KEEP),
    ) {
        (Ok(pipe), Ok(log)) => (pipe, log),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(log = %path.display(), error = %e, "cannot capture the output");
            return;
        }
    };
    let mut stamper = Stamper::default();
    // A failing write (a full disk) is said at most once a minute, and its
    // end once after that: not once per line, hundreds of times a second,
    // nor each time a page freed elsewhere lets one write through.
    let mut failing = false;
    let mut told: Option<std::time::Instant> = None;
    let mut told_unrecovered = false;
    let mut lost: u64 = 0;
    let mut write = |log: &mut RotatingLog, bytes: &[u8]| match log.write(bytes) {
        Ok(()) => {
            if std::mem::take(&mut failing) && std::mem::take(&mut told_unrecovered) {
                tracing::warn!(log = %path.display(), lost_bytes = lost, "the log is written again");
                lost = 0;
            }
        }
        Err(e) => {
            if !failing && told.is_none_or(|t| t.elapsed() >= LOG_COMPLAINT_INTERVAL) {
                tracing::error!(log = %path.display(), error = %e, "cannot write the log; its output is dropped until it can");
                told = Some(std::time::Instant::now());
                told_unrecovered = true;
            }
            failing = true;
            lost += bytes.len() as u64;
        }
    };
    loop {
        if let Err(e) = pipe.readable().await {
            tracing::error!(log = %path.display(), error = %e, "reading the output");
            return;
        }
        let mut buf = [0u8; 16 << 10];
        match pipe.try_read(&mut buf) {
            Ok(0) => {
                let mut out = Vec::new();
                stamper.finish(&mut out);
                write(&mut log, &out);
                return;
            }
            Ok(n) => {
                let mut out = Vec::with_capacity(n + 64);
                stamper.stamp(&buf[..n], std::time::SystemTime::now(), &mut out);
                write(&mut log, &out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::error!(log = %path.display(), error = %e, "reading the output");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_stamped_once_even_across_chunks() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let mut s = Stamper::default();
        let mut out = Vec::new();
        s.stamp(b"one\ntw", t, &mut out);
        s.stamp(b"o\nthree", t, &mut out);
        s.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "1970-01-02T00:00:00.000000Z one\n1970-01-02T00:00:00.000000Z two\n1970-01-02T00:00:00.000000Z three\n"
        );
        let lines: Vec<_> = text.lines().map(split_line).collect();
        assert_eq!(lines, [(Some(t), "one"), (Some(t), "two"), (Some(t), "three")]);
        assert_eq!(split_line("no stamp here"), (None, "no stamp here"));
    }

    use super::*;

    #[test]
    fn rotates_at_the_cap_and_keeps_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut log = RotatingLog::open(&path, 10, 2).unwrap();
        for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n", "gggg\n"] {
            log.write(line.as_bytes()).unwrap();
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), "gggg\n");
        assert_eq!(read(numbered(&path, 1)), "eeee\nffff\n");
        assert_eq!(read(numbered(&path, 2)), "cccc\ndddd\n");
        assert!(!numbered(&path, 3).exists(), "only `keep` old files remain");
    }

    #[test]
    fn reopening_continues_the_count_and_a_long_line_is_not_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.log");
        RotatingLog::open(&path, 8, 1).unwrap().write(b"123456\n").unwrap();
        let mut log = RotatingLog::open(&path, 8, 1).unwrap();
        log.write(b"a very long line\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a very long line\n");
        assert_eq!(std::fs::read_to_string(numbered(&path, 1)).unwrap(), "123456\n");
    }
}
