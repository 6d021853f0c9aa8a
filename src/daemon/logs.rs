//! A workload's captured stdout and stderr: one file per workload in the
//! state directory, capped in size and rotated (`NAME.log`, `NAME.log.1`,
//! ...), so that nothing a workload prints before it crashes is lost and
//! nothing it prints can fill the disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
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
