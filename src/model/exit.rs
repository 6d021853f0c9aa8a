//! How a workload's run ended: the one type the sandbox reports, the
//! supervisor decides on, and `status`, logs and metrics print.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Signal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// The kernel's OOM killer ended it (a SIGKILL at the memory limit).
    OomKilled,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// As a shell reports it: the code, or 128 + the signal (SIGKILL's for an OOM kill).
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
            Exit::OomKilled => 128 + libc::SIGKILL,
        }
    }

    /// As `status` shows it in its LAST EXIT column: "0", "SIGKILL", "oom-killed".
    pub fn short(self) -> String {
        match self {
            Exit::Code(c) => c.to_string(),
            Exit::Signal(s) => Signal::from_number(s).map_or_else(|| format!("signal {s}"), |s| s.to_string()),
            Exit::OomKilled => "oom-killed".to_owned(),
        }
    }
}

/// In sentences and logs: "exit 0", "exit 3", "SIGKILL", "oom-killed".
impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            other => f.write_str(&other.short()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_a_shell_and_a_person_would() {
        assert_eq!((Exit::Code(3).code(), Exit::Signal(15).code(), Exit::OomKilled.code()), (3, 143, 137));
        assert_eq!(Exit::Code(0).to_string(), "exit 0");
        assert_eq!(Exit::Signal(15).to_string(), "SIGTERM");
        assert_eq!(Exit::Signal(64).short(), "signal 64");
        assert_eq!(Exit::OomKilled.to_string(), "oom-killed");
        assert_eq!((Exit::Code(0).short(), Exit::Code(7).short()), ("0".to_owned(), "7".to_owned()));
    }
}
