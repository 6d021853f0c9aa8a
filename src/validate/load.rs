//! Reading manifest files safely: only regular files, at most 1 MiB, UTF-8,
//! never blocking on a FIFO or a device.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::problem::Problem;
use crate::model::WorkloadName;

/// Manifests larger than this are refused unread.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read at all (missing, permission): an I/O error.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// It was read, and it cannot be a manifest: the file is invalid.
    #[error("{0}")]
    Invalid(InvalidFile),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFile {
    #[error("{kind} is not a manifest: only regular files are read")]
    NotRegular { kind: &'static str },
    #[error("the file is {size} bytes; manifests are limited to {MAX_MANIFEST_BYTES} bytes (1 MiB)")]
    TooLarge { size: u64 },
    /// `lossy` is the text with bad bytes replaced, to show the line.
    #[error("the file is not valid UTF-8 (at byte {offset})")]
    NotUtf8 { offset: usize, lossy: String },
    /// A manifest that is a symbolic link whose target is not there
    /// (removed, or never made): the operator's file, not a missing one.
    #[error("a symbolic link to {}, and no file is there: make it lead to a manifest, or remove it", target.display())]
    LeadsNowhere { target: PathBuf },
    /// A manifest that is a symbolic link that never reaches a file (it
    /// leads back to itself, or through too many links).
    #[error("a symbolic link to {}, which loops (too many levels of links): make it lead to a manifest, or remove it", target.display())]
    Loops { target: PathBuf },
}

/// What a manifest that could not be opened (`source`) is, if the cause
/// is the link it is: one leading nowhere, or one that loops. Such a file
/// is the operator's, invalid, not one that could not be read. None for
/// another error, or a path that is no link (now).
pub fn link_problem(path: &Path, source: &std::io::Error) -> Option<InvalidFile> {
    let link = |target| match source.raw_os_error() {
        Some(libc::ENOENT) => Some(InvalidFile::LeadsNowhere { target }),
        Some(libc::ELOOP) => Some(InvalidFile::Loops { target }),
        _ => None,
    };
    std::fs::read_link(path).ok().and_then(link)
}

impl InvalidFile {
    /// The text to show problems against (only bad UTF-8 has any).
    pub fn text(&self) -> &str {
        match self {
            InvalidFile::NotUtf8 { lossy, .. } => lossy,
            _ => "",
        }
    }

    /// As a problem of the file. For bad UTF-8, the span is the bad byte.
    pub fn problem(&self) -> Problem {
        let span = match self {
            InvalidFile::NotUtf8 { offset, .. } => Some(*offset..*offset + 1),
            _ => None,
        };
        Problem::error(span, self.to_string())
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "this kind of file"
    }
}

/// Reads a manifest. The file is opened only if it is a regular file (a
/// FIFO named `x.toml` cannot hang the reader, a device is not opened),
/// and checked on the open descriptor (not the path) so it cannot be
/// swapped in between.
pub fn read_manifest(path: &Path) -> Result<String, LoadError> {
    let io = |source| LoadError::Io { path: path.to_owned(), source };
    let file = crate::fsutil::open_if_regular(path).map_err(io)?;
    read_open_manifest(file, path).map(|(text, _)| text)
}

/// `read_manifest` of a file already open (non-blocking) for reading, with
/// its metadata (of the open descriptor: whoever checks its owner checks
/// the file whose text this is, not whatever the path leads to a moment
/// later); `path` names it in errors.
pub fn read_open_manifest(mut file: File, path: &Path) -> Result<(String, std::fs::Metadata), LoadError> {
    let io = |source| LoadError::Io { path: path.to_owned(), source };
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(LoadError::Invalid(InvalidFile::NotRegular { kind: kind_of(meta.file_type()) }));
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(LoadError::Invalid(InvalidFile::TooLarge { size: meta.len() }));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The size can change under us; never read past the limit.
    (&mut file).take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(LoadError::Invalid(InvalidFile::TooLarge { size: bytes.len() as u64 }));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        LoadError::Invalid(InvalidFile::NotUtf8 { offset, lossy: String::from_utf8_lossy(e.as_bytes()).into_owned() })
    })?;
    Ok((text, meta))
}

/// The files of `dir` that are neither manifests nor what the daemon
/// ignores on purpose (dotfiles, editors' and dpkg's temporaries): a
/// `web.yaml` or `web.conf` an operator may take for one. (Not its
/// directories: a `disabled/` beside the manifests is an operator's way
/// to keep files the daemon is not to read.)
pub fn not_manifests(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.ends_with(".toml") && !crate::model::is_ignored_file_name(&name)
        })
        .map(|e| e.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// The manifest files in a directory, sorted: every `*.toml` entry whose
/// name the daemon does not ignore, whatever its type (a directory named
/// `x.toml` is listed, so that it is reported rather than skipped).
pub fn list_manifests(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().and_then(WorkloadName::stem_of_manifest_file).is_some() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}
