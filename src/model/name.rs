//! Workload names: the only way to get one is to parse it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest name: a DNS label, so it can be a hostname and a cgroup name.
pub const MAX_NAME_LEN: usize = 63;

/// What a workload's name matches, as the schema says it (`after`).
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// A workload's name: the manifest's file stem, matching `NAME_PATTERN`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkloadName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a workload name cannot be empty")]
    Empty,
    #[error("`{0}` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error("`{0}` may only contain lowercase letters, digits and `-`, and must start and end with a letter or digit")]
    BadCharacters(String),
}

/// As much of what was given for a name as a name may hold, marked when
/// cut: what an error quotes of it (a request's can be 64 KiB).
pub fn quoted(given: &str) -> String {
    let mut shown: String = given.chars().take(MAX_NAME_LEN).collect();
    if shown.len() < given.len() {
        shown.push_str("...");
    }
    shown
}

impl WorkloadName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The workload name a manifest file stands for, or `None` when the
    /// daemon ignores the file (not `*.toml`, or an editor's or package
    /// manager's temporary). The name itself still has to be parsed.
    pub fn stem_of_manifest_file(file_name: &str) -> Option<&str> {
        if is_ignored_file_name(file_name) {
            return None;
        }
        file_name.strip_suffix(".toml")
    }
}

/// Names the daemon never reads: dotfiles and the temporaries that editors
/// and dpkg leave beside a file while it is being written (vim's `4913`
/// is the file it makes to test that it may write the directory; Emacs
/// auto-saves `web.toml` as `#web.toml#`).
pub fn is_ignored_file_name(file_name: &str) -> bool {
    file_name.starts_with('.')
        || (file_name.len() > 1 && file_name.starts_with('#') && file_name.ends_with('#'))
        || file_name == "4913"
        || file_name.ends_with('~')
        || file_name.ends_with(".swp")
        || file_name.ends_with(".tmp")
        || file_name.contains(".dpkg-")
}

impl TryFrom<&str> for WorkloadName {
    type Error = NameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        let bytes = s.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err(NameError::Empty);
        };
        if bytes.len() > MAX_NAME_LEN {
            // Quoted as far as a name may go: a request's name can be 64 KiB.
            return Err(NameError::TooLong(quoted(s)));
        }
        let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !edge_ok(first) || !edge_ok(last) || !bytes.iter().all(inner_ok) {
            return Err(NameError::BadCharacters(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for WorkloadName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::try_from(s.as_str())
    }
}

impl From<WorkloadName> for String {
    fn from(name: WorkloadName) -> Self {
        name.0
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "web-1", "0", "a".repeat(63).as_str()] {
            assert_eq!(WorkloadName::try_from(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(WorkloadName::try_from(""), Err(NameError::Empty));
        for bad in ["-a", "a-", "Web", "a_b", "a.b", "é", "a b"] {
            assert!(matches!(WorkloadName::try_from(bad), Err(NameError::BadCharacters(_))), "{bad}");
        }
        assert!(matches!(WorkloadName::try_from("a".repeat(64)), Err(NameError::TooLong(_))));
        // Quoted only as far as a name may go.
        let long = WorkloadName::try_from("b".repeat(65_000)).unwrap_err().to_string();
        assert!(long.starts_with(&format!("`{}...` is longer than 63", "b".repeat(63))), "{}", &long[..100]);
    }

    #[test]
    fn ignores_temporaries() {
        assert_eq!(WorkloadName::stem_of_manifest_file("web.toml"), Some("web"));
        for ignored in
            [".web.toml", "web.toml~", "web.toml.swp", "web.toml.tmp", "web.toml.dpkg-new", "web.txt", ".#web.toml"]
        {
            assert_eq!(WorkloadName::stem_of_manifest_file(ignored), None, "{ignored}");
        }
        // Ignored, not "not read" (a warning): what editors leave while a
        // file is edited, Emacs's auto-save (`#web.toml#`) too.
        for ignored in [".web.toml.swp", "web.toml~", "4913", "#web.toml#", ".#web.toml"] {
            assert!(is_ignored_file_name(ignored), "{ignored}");
        }
        for not_read in ["web.txt", "web.toml.bak", "#web.toml", "web#"] {
            assert!(!is_ignored_file_name(not_read), "{not_read}");
        }
    }
}
