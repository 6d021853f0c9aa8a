//! The lines of a workload's log: each stamped with the time its first
//! byte arrived (`2026-11-23T05:20:00.123456Z hello`), in one file per
//! workload in the state directory, capped in size and rotated
//! (`NAME.log`, `NAME.log.1`, ...). The sandbox's init writes them (so a
//! workload's output never waits on the daemon), the daemon rotates the
//! files when the init says one is full, and `paddock logs` reads them.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::timefmt::{parse_rfc3339, rfc3339};

/// Largest log file before it is rotated, and how many old ones are kept
/// (`paddock logs` reads them all).
pub const LOG_MAX_BYTES: u64 = 10 << 20;
pub const LOG_KEEP: usize = 3;

/// Each line of a log file starts with the time its first byte arrived and
/// a space: `2026-11-23T05:20:00.123456Z hello`. `paddock logs` strips it
/// unless asked (`--timestamps`) and filters on it (`--since`).
#[derive(Debug, Default)]
pub struct Stamper {
    mid_line: bool,
    /// The line was ended for the workload (`end_line`): a newline of its
    /// that comes next ends nothing more.
    ended: bool,
}

impl Stamper {
    /// Appends `chunk` to `out`, each new line prefixed with `now`.
    pub fn stamp(&mut self, chunk: &[u8], now: SystemTime, out: &mut Vec<u8>) {
        let prefix = rfc3339(now);
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if std::mem::take(&mut self.ended) && piece == b"\n" {
                continue;
            }
            if !self.mid_line {
                out.extend_from_slice(prefix.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(piece);
            self.mid_line = !piece.ends_with(b"\n");
        }
    }

    /// What follows begins a line of its own, stamped (the rest of the
    /// line it was in could not be written).
    pub fn break_line(&mut self) {
        self.mid_line = false;
    }

    /// As `break_line`, the line having been ended in the file (a
    /// rotation): if its rest is only its newline, no empty line follows.
    pub fn end_line(&mut self) {
        self.mid_line = false;
        self.ended = true;
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

pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens a workload's log for appending (created 0600 when missing); a
/// symlink in its place is refused (ELOOP), never followed as root.
pub fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(path)
}

/// Opens a workload's log for a new run (`open`), ending a line the last
/// run left unfinished (its init killed in the middle of one: a stop's
/// SIGKILL, the OOM killer), so that the new run's first line is not
/// filed under the old one's time.
pub fn open_for_run(path: &Path) -> std::io::Result<File> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let mut file = open(path)?;
    let size = file.metadata()?.len();
    // Read through a descriptor of its own (the one returned, the init's
    // stdout, only writes), opened again through this one, not the path;
    // at best: a start never fails for it.
    let reader = (size > 0)
        .then(|| std::fs::File::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file))).ok())
        .flatten();
    let mut last = [0u8; 1];
    if let Some(reader) = reader
        && reader.read_at(&mut last, size - 1).is_ok_and(|n| n == 1)
        && last[0] != b'\n'
    {
        file.write_all(b"\n")?;
    }
    Ok(file)
}

/// How long the logs of a workload that is gone (no manifest, nothing
/// of it kept) stay after their last write: a day to read them, and then
/// a removed name's 40 MiB at most are the disk's again.
pub const GONE_LOGS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The logs in `dir` (`NAME.log`, `NAME.log.N`) of the names `known` does
/// not hold, by name, whose newest file was last written before `before`
/// (a workload that is forgotten has its log's time set then:
/// `mark_gone`). Anything else there is left, links too.
pub fn gone_logs(dir: &Path, known: impl Fn(&str) -> bool, before: SystemTime) -> Vec<(String, Vec<PathBuf>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut sets: std::collections::BTreeMap<String, (SystemTime, Vec<PathBuf>)> = std::collections::BTreeMap::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let name = match file.rsplit_once(".log") {
            Some((name, "")) => name,
            Some((name, n))
                if n.strip_prefix('.').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                name
            }
            _ => continue,
        };
        if crate::model::WorkloadName::try_from(name).is_err() || known(name) {
            continue;
        }
        // Not followed: a log is never a link.
        let Some(written) = entry.metadata().ok().filter(|m| m.is_file()).and_then(|m| m.modified().ok()) else {
            continue;
        };
        let set = sets.entry(name.to_owned()).or_insert((SystemTime::UNIX_EPOCH, Vec::new()));
        set.0 = set.0.max(written);
        set.1.push(entry.path());
    }
    sets.into_iter().filter(|(_, (newest, _))| *newest < before).map(|(name, (_, files))| (name, files)).collect()
}

/// A workload is forgotten: its log's time is now, from which its logs
/// are kept `GONE_LOGS_KEPT` (not from its last line, which may be a
/// quiet workload's of long ago). A link is not followed; no log is fine.
pub fn mark_gone(path: &Path) {
    let now =
        nix::sys::time::TimeSpec::from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default());
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &now,
        &now,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// The file a workload's init is to write its log into when it asks for
/// a new one: the log rotated when full (`max` bytes, `keep` older files);
/// as it is when not (an ask that queued behind one answered already, or
/// a log an operator truncated: in case an answer was lost and the init
/// writes an older one); made anew when missing (an operator removed it,
/// and the init writes into the removed file, which no one can read).
pub fn for_new_log(path: &Path, max: u64, keep: usize) -> std::io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => open(path),
        Ok(m) if m.len() < max => open(path),
        _ => rotate(path, keep),
    }
}

/// Rotates a full log: `path.1` becomes `path.2` (... up to `keep`), `path`
/// becomes `path.1`, and a new, empty `path` is opened and returned. A
/// writer that still holds the old file writes into `path.1`: nothing is
/// lost, and lines stay in order.
pub fn rotate(path: &Path, keep: usize) -> std::io::Result<File> {
    // Nothing moves down for a log that is not there (an operator removed
    // it): each ask would push the older files one further, and the
    // oldest out.
    std::fs::symlink_metadata(path)?;
    if keep == 0 {
        std::fs::remove_file(path)?;
    } else {
        for n in (1..keep).rev() {
            let from = numbered(path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(path, n + 1))?;
            }
        }
        std::fs::rename(path, numbered(path, 1))?;
    }
    open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The logs of a name no workload has go a day after the newest of
    /// them was written (or its workload forgotten), all of them at once;
    /// a known name's, a recent one's and what is not a log stay. (They
    /// stayed for ever: one set per name ever used.)
    #[test]
    fn logs_of_names_gone_for_a_day_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day_ago = now - GONE_LOGS_KEPT - std::time::Duration::from_secs(60);
        let write = |file: &str, at: SystemTime| {
            std::fs::write(dir.path().join(file), "x\n").unwrap();
            File::options().write(true).open(dir.path().join(file)).unwrap().set_modified(at).unwrap();
        };
        for file in
            ["old.log", "old.log.1", "old.log.3", "web.log", "web.log.2", "notes.txt", "Bad_Name.log", "old.logx"]
        {
            write(file, day_ago);
        }
        write("recent.log", now);
        write("recent.log.1", day_ago);
        write("quiet.log", day_ago);
        mark_gone(&dir.path().join("quiet.log"));
        let gone = gone_logs(dir.path(), |name| name == "web", now - GONE_LOGS_KEPT);
        let names: Vec<&str> = gone.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["old"]);
        let mut files: Vec<String> =
            gone[0].1.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        files.sort();
        assert_eq!(files, ["old.log", "old.log.1", "old.log.3"]);
    }

    /// A log an operator removed is made anew, and no older file moves
    /// (each ask used to push them one further, the oldest out, and fail).
    #[test]
    fn a_removed_log_is_made_anew_and_the_older_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web.log");
        for n in 1..=3 {
            std::fs::write(numbered(&log, n), format!("{n}\n")).unwrap();
        }
        assert_eq!(rotate(&log, 4).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        for _ in 0..3 {
            for_new_log(&log, 10, 4).unwrap();
        }
        assert!(log.exists());
        for n in 1..=3 {
            assert_eq!(std::fs::read_to_string(numbered(&log, n)).unwrap(), format!("{n}\n"));
        }
        // Full: rotated; not full: as it is.
        std::fs::write(&log, "0123456789\n").unwrap();
        for_new_log(&log, 10, 4).unwrap();
        assert_eq!(std::fs::read_to_string(numbered(&log, 1)).unwrap(), "0123456789\n");
        assert_eq!(std::fs::read_to_string(numbered(&log, 4)).unwrap(), "3\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
        std::fs::write(&log, "short\n").unwrap();
        for_new_log(&log, 10, 4).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "short\n");
    }

    #[test]
    fn a_line_a_killed_run_left_unfinished_is_ended_before_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web.log");
        open_for_run(&log).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "", "nothing added to an empty log");
        std::fs::write(&log, "2026-12-06T07:00:00.000000Z done\n2026-12-06T07:00:01.000000Z half").unwrap();
        open_for_run(&log).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.ends_with(" half\n"), "{text:?}");
        open_for_run(&log).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), text, "an ended line is left as it is");
    }

    #[test]
    fn a_log_that_is_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (target, log) = (dir.path().join("elsewhere"), dir.path().join("web.log"));
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, &log).unwrap();
        let e = open(&log).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "", "nothing reached the link's target");
    }

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

    #[test]
    fn a_line_ended_for_a_rotation_goes_on_stamped_and_its_lone_newline_adds_no_line() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let mut s = Stamper::default();
        let mut out = Vec::new();
        s.stamp(b"torn", t, &mut out);
        s.end_line();
        s.stamp(b"\nnext\n", t, &mut out);
        s.stamp(b"torn", t, &mut out);
        s.end_line();
        s.stamp(b" rest\n\n", t, &mut out);
        let text = String::from_utf8(out).unwrap();
        let stamp = "1970-01-02T00:00:00.000000Z";
        assert_eq!(text, format!("{stamp} torn{stamp} next\n{stamp} torn{stamp}  rest\n{stamp} \n"));
    }

    #[test]
    fn rotation_keeps_a_few_and_the_old_writer_writes_on_in_the_first() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut old = open(&path).unwrap();
        old.write_all(b"a\n").unwrap();
        for round in ["b", "c", "d"] {
            let mut new = rotate(&path, 2).unwrap();
            // The writer that asked keeps writing the old file until it switches.
            old.write_all(b"late\n").unwrap();
            new.write_all(format!("{round}\n").as_bytes()).unwrap();
            old = new;
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), "d\n");
        assert_eq!(read(numbered(&path, 1)), "c\nlate\n");
        assert_eq!(read(numbered(&path, 2)), "b\nlate\n");
        assert!(!numbered(&path, 3).exists(), "only `keep` old files remain");
        assert_eq!(files_oldest_first(&path, 2), [numbered(&path, 2), numbered(&path, 1), path]);
    }
}
