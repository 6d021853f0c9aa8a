//! `[health]`: how paddock tells that a running workload still works.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::Duration;

/// A health check: one probe (`command`, `tcp` or `http`), made from
/// inside the workload's network namespace, every `interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// A command run inside the workload as `paddock exec` runs it (its
    /// user, namespaces, capabilities and seccomp filter); healthy when it
    /// exits 0. E.g. ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub command: Option<Vec<String>>,

    /// A TCP port inside the workload: healthy when a connection to
    /// 127.0.0.1 on it is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp: Option<u16>,

    /// An HTTP GET to 127.0.0.1 inside the workload: healthy when the
    /// answer's status is 200 to 399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,

    /// Time between two probes (and from the start to the first); a
    /// shorter one than 100ms is 100ms.
    #[serde(default = "default_interval")]
    pub interval: Duration,

    /// A probe that takes longer has failed (a command is killed).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,

    /// Failed probes in a row before the workload is unhealthy.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 1, max = 1000))]
    pub retries: u32,

    /// Time after the start during which failed probes do not count (a
    /// slow start); the first probe that passes ends it.
    #[serde(default)]
    pub start_period: Duration,

    /// "restart": an unhealthy workload is stopped with its stop signal and
    /// restarted through its restart policy and backoff, as a failed run
    /// (kubelet's liveness probe). "mark": it is only shown unhealthy (and
    /// a workload `after` it waits).
    #[serde(default)]
    pub on_unhealthy: OnUnhealthy,
}

/// An HTTP probe's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// The port inside the workload.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The path requested.
    #[serde(default = "default_path")]
    #[schemars(regex(pattern = r"^/[\x21-\x7e]*$"))]
    pub path: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    #[default]
    Restart,
    Mark,
}

/// A health check's probe, one of the three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Command(Vec<String>),
    Tcp(u16),
    Http { port: u16, path: String },
}

impl Health {
    /// The time between two probes: `interval`, at least `MIN_PROBE_INTERVAL`.
    pub fn period(&self) -> std::time::Duration {
        self.interval.as_std().max(MIN_PROBE_INTERVAL)
    }

    /// The probe, when exactly one is written (the validator refuses the rest).
    pub fn probe(&self) -> Option<Probe> {
        match (&self.command, self.tcp, &self.http) {
            (Some(c), None, None) => Some(Probe::Command(c.clone())),
            (None, Some(port), None) => Some(Probe::Tcp(port)),
            (None, None, Some(h)) => Some(Probe::Http { port: h.port, path: h.path.clone() }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Command(argv) => write!(f, "command {}", argv.join(" ")),
            Probe::Tcp(port) => write!(f, "tcp 127.0.0.1:{port}"),
            Probe::Http { port, path } => write!(f, "http GET 127.0.0.1:{port}{path}"),
        }
    }
}

/// The shortest time between two probes: a shorter `interval` is probed
/// this often (and `check` warns of it).
pub const MIN_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

const fn default_interval() -> Duration {
    Duration::from_secs(10)
}
const fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
const fn default_retries() -> u32 {
    3
}
fn default_path() -> String {
    "/".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_under_100ms_is_probed_every_100ms() {
        let health =
            |interval: &str| -> Health { toml::from_str(&format!("tcp = 80\ninterval = \"{interval}\"\n")).unwrap() };
        assert_eq!(health("0s").period(), MIN_PROBE_INTERVAL);
        assert_eq!(health("50ms").period(), MIN_PROBE_INTERVAL);
        assert_eq!(health("250ms").period(), std::time::Duration::from_millis(250));
    }
}
