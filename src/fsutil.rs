//! Small filesystem helpers shared by the modules that keep state.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` atomically: write a temporary file beside it, fsync it,
/// rename it over, fsync the directory. A reader sees the old or the new
/// contents, never a mix; a crash leaves one of them. The mode and owner of
/// an existing file are kept (`default_mode` is for a new one).
pub fn write_atomic(path: &Path, contents: &[u8], default_mode: u32) -> std::io::Result<()> {
    replace(path, contents, default_mode, true)
}

/// As `write_atomic`, without the fsyncs: for records that only matter
/// while the machine stays up (what a crash of the machine loses, it also
/// made moot, such as the processes a record describes).
pub fn write_replace(path: &Path, contents: &[u8], default_mode: u32) -> std::io::Result<()> {
    replace(path, contents, default_mode, false)
}

fn replace(path: &Path, contents: &[u8], default_mode: u32, sync: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let existing = std::fs::metadata(path).ok();
    let mode = existing.as_ref().map_or(default_mode, |m| m.permissions().mode() & 0o7777);
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(contents)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(m) = &existing {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
        }
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if sync {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
