//! The daemon's configuration, `/etc/paddock/paddock.toml` (all optional),
//! validated like manifests: a JSON Schema from these types, errors with
//! file, line and column. Command-line flags beat the file, which beats
//! these defaults.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::idmap::Isolation;
use crate::model::Duration;
use crate::validate::{Problem, Schema, SchemaError};

pub const DEFAULT_CONFIG: &str = "/etc/paddock/paddock.toml";

/// paddock's daemon configuration. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "paddock daemon configuration")]
pub struct Config {
    /// The directory of workload manifests (*.toml).
    #[serde(default = "defaults::workloads")]
    pub workloads: PathBuf,
    /// Where id allocations, workload state and logs are kept.
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    /// The control socket (mode 0600, root only). One a daemon that died
    /// left is replaced; anything else at the path is refused, not removed.
    #[serde(default = "defaults::socket")]
    pub socket: PathBuf,
    /// Runtime state that ends with the boot: the network namespaces of
    /// networked workloads (netns/NAME).
    #[serde(default = "defaults::run_dir")]
    pub run_dir: PathBuf,
    /// The active policies, by name: built-in (baseline, restricted,
    /// privileged) or from policy_dir.
    #[serde(default = "defaults::policies")]
    #[schemars(length(min = 1))]
    pub policies: Vec<String>,
    /// Where the file names each of `policies`, for the error of one that
    /// is not found (known only once the policies are loaded).
    #[serde(skip)]
    #[schemars(skip)]
    pub policy_lines: Whereabouts,
    /// What the file says that does nothing, as `check` shows a manifest's
    /// warnings (`PATH:LINE:COL: warning: ...`): said by the commands
    /// that use the configuration, not refused.
    #[serde(skip)]
    #[schemars(skip)]
    pub warnings: Vec<String>,
    /// Where operators' policies (NAME.json) are found.
    #[serde(default = "defaults::policy_dir")]
    pub policy_dir: PathBuf,
    /// The only place idmapped mounts may come from (baseline policy).
    #[serde(default = "defaults::volumes_root")]
    pub volumes_root: PathBuf,
    /// A full rescan of the workloads directory at least this often, in
    /// case a change was missed (more than 0).
    #[serde(default = "defaults::resync_interval")]
    pub resync_interval: Duration,
    /// How long a workload's start may take, from the clone to its
    /// command's exec, before it is killed and counted as a failed start
    /// (an init stuck on a dead network mount, say).
    #[serde(default = "defaults::start_timeout")]
    pub start_timeout: Duration,
    /// How long the daemon's own stop (SIGTERM) may take: what is still
    /// running then is killed, and the daemon exits. It asks systemd to
    /// wait that long and 10 s more (EXTEND_TIMEOUT_USEC), past the unit's
    /// `TimeoutStopSec=` if need be. A workload's longer `stop.timeout`
    /// is cut short by it.
    #[serde(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// Where to serve Prometheus metrics, e.g. "127.0.0.1:9464"; empty: off.
    #[serde(default)]
    pub metrics_listen: String,
    /// The cgroup filesystem: v2 when it is a cgroup2 mount, else v1
    /// hierarchies under it.
    #[serde(default = "defaults::cgroup_root")]
    pub cgroup_root: PathBuf,
    /// Identity mapping.
    #[serde(default)]
    pub remap: Remap,
    /// Defaults for the restart keys a manifest leaves out.
    #[serde(default)]
    pub restart: RestartDefaults,
    /// Networks: the built-in `bridge` and where CNI plugins and other
    /// networks are found.
    #[serde(default)]
    pub network: NetworkConfig,
}

/// `[network]`: the built-in network `bridge`, and CNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The host bridge of the built-in network (made when first needed).
    #[serde(default = "defaults::bridge")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,15}$"))]
    pub bridge: String,
    /// The built-in network's IPv4 subnet: each workload gets an address
    /// in it, the bridge the first one (the workloads' gateway). The
    /// default is used by neither Docker (172.17.0.0/16) nor Podman
    /// (10.88.0.0/16).
    #[serde(default = "defaults::subnet")]
    #[schemars(regex(pattern = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"))]
    pub subnet: String,
    /// The built-in network's CNI plugins after `bridge` (which comes
    /// first, with host-local addresses): `portmap` publishes ports,
    /// `firewall` lets the workloads' traffic through a FORWARD chain
    /// that drops by default (as Docker's does). `tuning` and `bandwidth`
    /// are refused here (the built-in network has no settings to give
    /// them): a network of one's own in `networks_dir` can chain them.
    #[serde(default = "defaults::chain")]
    pub chain: Vec<ChainPlugin>,
    /// Where CNI plugin programs are looked for, in order.
    #[serde(default = "defaults::plugin_dirs")]
    #[schemars(length(min = 1))]
    pub plugin_dirs: Vec<PathBuf>,
    /// Other networks a manifest can name: CNI network configuration lists
    /// (NAME.conflist), as in /etc/cni/net.d. Must be root's and not
    /// writable by others, like the workloads directory.
    #[serde(default = "defaults::networks_dir")]
    pub networks_dir: PathBuf,
}

/// A plugin of the built-in network's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChainPlugin {
    Portmap,
    Firewall,
    Tuning,
    Bandwidth,
}

impl ChainPlugin {
    pub fn name(self) -> &'static str {
        match self {
            ChainPlugin::Portmap => "portmap",
            ChainPlugin::Firewall => "firewall",
            ChainPlugin::Tuning => "tuning",
            ChainPlugin::Bandwidth => "bandwidth",
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: defaults::bridge(),
            subnet: defaults::subnet(),
            chain: defaults::chain(),
            plugin_dirs: defaults::plugin_dirs(),
            networks_dir: defaults::networks_dir(),
        }
    }
}

/// Whose subordinate ids workloads get, and how they are shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Remap {
    /// "default": the user paddock, created with a range when missing.
    /// Any other name: that user's ranges in /etc/subuid and /etc/subgid.
    #[serde(default = "defaults::remap_user")]
    pub user: String,
    /// "per-workload": a slice of its own for each workload. "shared": the
    /// first range for every workload, as Docker does.
    #[serde(default)]
    pub isolation: Isolation,
    /// Ids per workload slice.
    #[serde(default = "defaults::slice_size")]
    #[schemars(range(min = 1))]
    pub slice_size: u32,
    /// The account files (for tests and unusual hosts).
    #[serde(default = "defaults::subuid")]
    pub subuid: PathBuf,
    #[serde(default = "defaults::subgid")]
    pub subgid: PathBuf,
    #[serde(default = "defaults::passwd")]
    pub passwd: PathBuf,
    #[serde(default = "defaults::group")]
    pub group: PathBuf,
    /// Where the configuration names each account file, for their errors.
    #[serde(skip)]
    #[schemars(skip)]
    pub named_in: NamedIn,
}

/// The configuration file that was read for `[remap]` (or would have
/// been: the default one, when absent), and where it writes each of the
/// account files' keys (`PATH:LINE:COLUMN`). Not part of the value, as
/// `Whereabouts`: two configurations that say the same on other lines
/// are equal. Unknown (a running daemon's `[remap]`, handed to its
/// re-execution) when `file` is `None`.
#[derive(Debug, Clone, Default)]
pub struct NamedIn {
    file: Option<PathBuf>,
    at: std::collections::BTreeMap<&'static str, String>,
}

impl PartialEq for NamedIn {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The `[remap]` keys that name account files.
const ACCOUNT_KEYS: [&str; 4] = ["passwd", "group", "subuid", "subgid"];

/// The ids of a workload's slice unless `[remap] slice_size` says otherwise.
pub const DEFAULT_SLICE_SIZE: u32 = 65536;

/// Where the daemon keeps its state unless the configuration says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/paddock";

mod defaults {
    use std::path::PathBuf;

    pub fn workloads() -> PathBuf {
        "/etc/paddock/workloads".into()
    }
    pub fn state_dir() -> PathBuf {
        super::DEFAULT_STATE_DIR.into()
    }
    pub fn socket() -> PathBuf {
        "/run/paddock/paddock.sock".into()
    }
    pub fn run_dir() -> PathBuf {
        "/run/paddock".into()
    }
    pub fn bridge() -> String {
        "paddock0".into()
    }
    pub fn subnet() -> String {
        "10.77.0.0/16".into()
    }
    pub fn chain() -> Vec<super::ChainPlugin> {
        vec![super::ChainPlugin::Portmap, super::ChainPlugin::Firewall]
    }
    pub fn plugin_dirs() -> Vec<PathBuf> {
        vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()]
    }
    pub fn networks_dir() -> PathBuf {
        "/etc/paddock/networks".into()
    }
    pub fn policies() -> Vec<String> {
        vec!["baseline".into()]
    }
    pub fn policy_dir() -> PathBuf {
        "/etc/paddock/policies".into()
    }
    pub fn volumes_root() -> PathBuf {
        "/var/lib/paddock/volumes".into()
    }
    pub fn resync_interval() -> crate::model::Duration {
        crate::model::Duration::from_secs(30)
    }
    pub fn start_timeout() -> crate::model::Duration {
        crate::model::Duration::from_secs(30)
    }
    pub fn shutdown_timeout() -> crate::model::Duration {
        crate::model::Duration::from_secs(80)
    }
    pub fn cgroup_root() -> PathBuf {
        "/sys/fs/cgroup".into()
    }
    pub fn remap_user() -> String {
        "default".into()
    }
    pub fn slice_size() -> u32 {
        super::DEFAULT_SLICE_SIZE
    }
    pub fn subuid() -> PathBuf {
        "/etc/subuid".into()
    }
    pub fn subgid() -> PathBuf {
        "/etc/subgid".into()
    }
    pub fn passwd() -> PathBuf {
        "/etc/passwd".into()
    }
    pub fn group() -> PathBuf {
        "/etc/group".into()
    }
}

impl Remap {
    /// The account files this configuration names, each with where.
    pub fn accounts(&self) -> crate::idmap::AccountFiles {
        use crate::idmap::{AccountFile, NamedBy};
        let file = |key: &'static str, path: &PathBuf| {
            let named_by = match (self.named_in.at.get(key), &self.named_in.file) {
                (Some(at), _) => NamedBy::Config { key, at: Some(at.clone()) },
                (None, Some(config)) => NamedBy::Default { key, config: config.clone() },
                (None, None) => NamedBy::Config { key, at: None },
            };
            AccountFile { path: path.clone(), named_by }
        };
        crate::idmap::AccountFiles {
            passwd: file("passwd", &self.passwd),
            group: file("group", &self.group),
            subuid: file("subuid", &self.subuid),
            subgid: file("subgid", &self.subgid),
        }
    }
}

impl Default for Remap {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

/// The daemon's defaults for the restart keys a manifest leaves out
/// (`[restart]` in paddock.toml); the built-in ones are the manifest's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartDefaults {
    /// Consecutive failures before a workload with on-failure gives up (0: never).
    #[serde(default = "max_retries")]
    pub max_retries: u32,
    /// The first restart delay, doubled after each consecutive failure.
    #[serde(default = "backoff")]
    pub backoff: Duration,
    /// The longest delay between restarts.
    #[serde(default = "backoff_max")]
    pub backoff_max: Duration,
    /// A run at least this long resets the delay and the failure count.
    #[serde(default = "reset_after")]
    pub reset_after: Duration,
}

impl Default for RestartDefaults {
    fn default() -> Self {
        let r = crate::model::Restart::default();
        Self { max_retries: r.max_retries, backoff: r.backoff, backoff_max: r.backoff_max, reset_after: r.reset_after }
    }
}

impl RestartDefaults {
    /// Replaces the values of the keys the manifest did not write
    /// (`written("backoff")` says whether it did).
    pub fn fill(&self, restart: &mut crate::model::Restart, written: impl Fn(&str) -> bool) {
        if !written("max_retries") {
            restart.max_retries = self.max_retries;
        }
        if !written("backoff") {
            restart.backoff = self.backoff;
        }
        if !written("backoff_max") {
            restart.backoff_max = self.backoff_max;
        }
        if !written("reset_after") {
            restart.reset_after = self.reset_after;
        }
    }
}

fn max_retries() -> u32 {
    crate::model::Restart::default().max_retries
}
fn backoff() -> Duration {
    crate::model::Restart::default().backoff
}
fn backoff_max() -> Duration {
    crate::model::Restart::default().backoff_max
}
fn reset_after() -> Duration {
    crate::model::Restart::default().reset_after
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file's problems, to be shown with `validate::render` against `text`.
    #[error("{path} is not a valid configuration ({} problems)", problems.len())]
    Invalid { path: PathBuf, text: String, problems: Vec<Problem> },
    #[error("the configuration: {0}")]
    Untrusted(crate::fsutil::UntrustedFile),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// What whoever could change the configuration could do (`read_trusted`).
const CONFIG_RISK: &str = "chooses the policies, the remap user and the directories every workload runs with";

/// The largest configuration read (the commented default is about 5 KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The JSON Schema of the configuration file.
pub fn schema() -> serde_json::Value {
    crate::model::schema_settings().into_generator().into_root_schema_for::<Config>().to_value()
}

impl Config {
    /// Reads the configuration. With `path` given, the file must exist;
    /// without, `/etc/paddock/paddock.toml` is read when it exists and the
    /// defaults apply when it does not.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::read(path, true)
    }

    /// `load` for a command that only reads where the daemon is (its
    /// socket, its state directory) and does nothing as root with it: the
    /// file's owner is not checked (a client's peer check stands in for it).
    pub fn load_for_client(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::read(path, false)
    }

    fn read(path: Option<&Path>, trusted: bool) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        // As root, as the policies are: a file only root can change, read
        // through no link anyone else made, regular and at most 1 MiB.
        use crate::fsutil::UntrustedFile;
        let read = match trusted {
            true => crate::fsutil::read_trusted(&path, CONFIG_RISK, MAX_CONFIG_BYTES),
            false => crate::fsutil::read_bounded(&path, MAX_CONFIG_BYTES),
        };
        let text = match read {
            Ok(text) => text,
            Err(UntrustedFile::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound && !required => {
                let mut config = Self::default();
                config.remap.named_in.file = Some(path);
                return Ok(config);
            }
            Err(UntrustedFile::Io { source, .. }) => return Err(ConfigError::Read { path, source }),
            Err(untrusted) => return Err(ConfigError::Untrusted(untrusted)),
        };
        Self::parse(&path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let problems = match Schema::new(schema())?.parse::<Config>(&text) {
            Ok((mut config, spans)) => match config.problems(&spans) {
                problems if !problems.iter().any(Problem::is_error) => {
                    let shown = path.display().to_string();
                    let render = |p: &Problem| crate::validate::render(p, &shown, &text, crate::validate::Color::Never);
                    config.warnings = problems.iter().map(render).collect();
                    let at = |i: usize| spans.value_span(&format!("/policies/{i}"));
                    let lines = (0..config.policies.len()).map(|i| {
                        at(i).map(|span| {
                            let (line, column) = crate::validate::line_col(&text, span.start);
                            format!("{}:{line}:{column}", path.display())
                        })
                    });
                    config.policy_lines = Whereabouts(lines.collect());
                    let written = |key: &'static str| {
                        let span = spans.value_span(&format!("/remap/{key}"))?;
                        let (line, column) = crate::validate::line_col(&text, span.start);
                        Some((key, format!("{}:{line}:{column}", path.display())))
                    };
                    let at = ACCOUNT_KEYS.into_iter().filter_map(written).collect();
                    config.remap.named_in = NamedIn { file: Some(path.to_owned()), at };
                    return Ok(config);
                }
                problems => problems,
            },
            Err(problems) => problems,
        };
        Err(ConfigError::Invalid { path: path.to_owned(), text, problems })
    }

    /// What the schema cannot say: values that agree with each other.
    fn problems(&self, spans: &crate::validate::SpanIndex) -> Vec<Problem> {
        let at = |pointer: &str| spans.value_span(pointer).or_else(|| spans.locate(pointer));
        let mut problems = Vec::new();
        if self.resync_interval.as_std().is_zero() {
            problems.push(Problem::error(at("/resync_interval"), "resync_interval cannot be 0").with_help(
                "it is how often the whole workloads directory is read again in case a change was missed \
                     (changes are seen at once anyway); e.g. \"30s\", the default",
            ));
        }
        if self.start_timeout.as_std().is_zero() {
            problems.push(
                Problem::error(at("/start_timeout"), "start_timeout cannot be 0").with_help(
                    "every start would be killed before its sandbox could report; e.g. \"30s\", the default",
                ),
            );
        }
        let r = &self.restart;
        problems.extend(crate::validate::backoff_over_its_max(r.backoff, r.backoff_max, at("/restart/backoff")));
        if let Err(e) = metrics_address(&self.metrics_listen) {
            problems.push(Problem::error(at("/metrics_listen"), e.to_string()));
        }
        // Run with nothing to set, either changes nothing (a warning: a
        // configuration that had one before still starts the daemon).
        for (i, plugin) in self.network.chain.iter().enumerate() {
            let settings = match plugin {
                ChainPlugin::Tuning => "sysctls, a MAC address or an MTU",
                ChainPlugin::Bandwidth => "rates",
                ChainPlugin::Portmap | ChainPlugin::Firewall => continue,
            };
            let name = plugin.name();
            problems.push(
                Problem::warning(
                    at(&format!("/network/chain/{i}")),
                    format!(
                        "`{name}` in network.chain does nothing: the built-in network has no {settings} to give it"
                    ),
                )
                .with_help(format!(
                    "leave it out; or write a network of your own in networks_dir (a *.conflist whose `{name}` plugin \
                     says what to set) and name it in the manifests that need it"
                )),
            );
        }
        if crate::network::parse_subnet(&self.network.subnet).is_none() {
            problems.push(Problem::error(
                at("/network/subnet"),
                crate::network::NetworkError::Subnet(self.network.subnet.clone()).to_string(),
            ));
        }
        // Relative to the daemon's working directory (systemd's is /), a
        // path would name one place for `check` and another for the daemon.
        let (n, m) = (&self.network, &self.remap);
        let paths = [
            ("/workloads", &self.workloads),
            ("/state_dir", &self.state_dir),
            ("/socket", &self.socket),
            ("/run_dir", &self.run_dir),
            ("/policy_dir", &self.policy_dir),
            ("/volumes_root", &self.volumes_root),
            ("/cgroup_root", &self.cgroup_root),
            ("/network/networks_dir", &n.networks_dir),
            ("/remap/subuid", &m.subuid),
            ("/remap/subgid", &m.subgid),
            ("/remap/passwd", &m.passwd),
            ("/remap/group", &m.group),
        ];
        let named = paths.into_iter().map(|(p, path)| (p.to_owned(), p[1..].replace('/', "."), path));
        let plugins = (n.plugin_dirs.iter().enumerate())
            .map(|(i, dir)| (format!("/network/plugin_dirs/{i}"), format!("network.plugin_dirs[{i}]"), dir));
        for (pointer, key, path) in named.chain(plugins) {
            if path.is_relative() {
                problems.push(
                    Problem::error(
                        at(&pointer),
                        format!("`{key}` must be an absolute path, not {:?}", path.display().to_string()),
                    )
                    .with_help(
                        "the daemon runs from / (systemd's working directory): write the whole path, starting with /",
                    ),
                );
            }
        }
        problems
    }
}

/// Where a file says what (`PATH:LINE:COLUMN`, by index), kept beside the
/// values for errors found after parsing. Not part of the value: two
/// configurations that say the same on other lines are equal.
#[derive(Debug, Clone, Default)]
pub struct Whereabouts(Vec<Option<String>>);

impl Whereabouts {
    pub fn get(&self, index: usize) -> Option<&str> {
        self.0.get(index).and_then(Option::as_deref)
    }
}

impl PartialEq for Whereabouts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `metrics_listen`: "" is off; a bare port listens on loopback only;
/// otherwise an address and port, e.g. "127.0.0.1:9464" or "[::1]:9464".
pub fn metrics_address(text: &str) -> Result<Option<std::net::SocketAddr>, MetricsAddressError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))));
    }
    text.parse().map(Some).map_err(|_| MetricsAddressError(text.to_owned()))
}

/// `metrics_listen` is neither empty, a port, nor an address and port.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("metrics_listen = {0:?} is not an address and port; write it as \"127.0.0.1:9464\" (or \"\" for no metrics)")]
pub struct MetricsAddressError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_design_mds() {
        let c = Config::default();
        assert_eq!(c.workloads, Path::new("/etc/paddock/workloads"));
        assert_eq!(c.state_dir, Path::new("/var/lib/paddock"));
        assert_eq!(c.socket, Path::new("/run/paddock/paddock.sock"));
        assert_eq!(c.policies, ["baseline"]);
        assert_eq!(c.policy_dir, Path::new("/etc/paddock/policies"));
        assert_eq!(c.volumes_root, Path::new("/var/lib/paddock/volumes"));
        assert_eq!(c.resync_interval, Duration::from_secs(30));
        assert_eq!(c.metrics_listen, "");
        assert_eq!(c.remap.user, "default");
        assert_eq!(c.remap.isolation, Isolation::PerWorkload);
        assert_eq!(c.remap.slice_size, 65536);
    }

    /// The first line of each problem `text` has, as paddock shows it.
    fn first_lines(text: &str) -> Vec<String> {
        let Err(ConfigError::Invalid { problems, text, .. }) = Config::parse(Path::new("p.toml"), text.to_owned())
        else {
            panic!("invalid config accepted: {text}")
        };
        problems
            .iter()
            .map(|p| crate::validate::render(p, "p.toml", &text, crate::validate::Color::Never))
            .map(|shown| shown.lines().next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn errors_point_like_manifest_errors() {
        let text =
            "state_dir = \"/srv/paddock\"\nresync_interval = \"30\"\n[remap]\nisolation = \"per-host\"\nslice = 1\n";
        assert_eq!(
            first_lines(text),
            [
                "p.toml:2:19: error: `resync_interval` must be a duration: a number and one unit of ms, s, m or h, e.g. \"100ms\", \"1.5s\", \"2m\", not \"30\"",
                "p.toml:4:13: error: `remap.isolation` cannot be \"per-host\"",
                "p.toml:5:1: error: unknown key `slice` in [remap]",
            ]
        );
    }

    #[test]
    fn values_that_would_stop_the_daemon_later_are_errors_at_their_lines() {
        let text = "resync_interval = \"0s\"\n[restart]\nbackoff = \"2m\"\nbackoff_max = \"1m\"\n";
        assert_eq!(
            first_lines(text),
            [
                "p.toml:1:19: error: resync_interval cannot be 0",
                "p.toml:3:11: error: backoff (2m) is longer than backoff_max (1m)",
            ]
        );
        let fine = "resync_interval = \"500ms\"\n[restart]\nbackoff = \"1m\"\nbackoff_max = \"1m\"\n";
        Config::parse(Path::new("p.toml"), fine.to_owned()).unwrap();
        // Every start killed at once; a path that means another place from /.
        let text = "start_timeout = \"0s\"\nworkloads = \"wl\"\n[network]\nplugin_dirs = [\"/usr/lib/cni\", \"cni\"]\n";
        assert_eq!(
            first_lines(text),
            [
                "p.toml:1:17: error: start_timeout cannot be 0",
                "p.toml:2:13: error: `workloads` must be an absolute path, not \"wl\"",
                "p.toml:4:32: error: `network.plugin_dirs[1]` must be an absolute path, not \"cni\"",
            ]
        );
        // Plugins the built-in network has nothing to give: warned, at their lines.
        let text = "[network]\nchain = [\"portmap\", \"tuning\", \"firewall\", \"bandwidth\"]\n";
        let warned = Config::parse(Path::new("p.toml"), text.to_owned()).unwrap().warnings;
        let first: Vec<&str> = warned.iter().map(|w| w.lines().next().unwrap()).collect();
        assert_eq!(
            first,
            [
                "p.toml:2:21: warning: `tuning` in network.chain does nothing: the built-in network has no sysctls, a MAC address or an MTU to give it",
                "p.toml:2:43: warning: `bandwidth` in network.chain does nothing: the built-in network has no rates to give it",
            ]
        );
        let fine = Config::parse(Path::new("p.toml"), "[network]\nchain = [\"firewall\", \"portmap\"]\n".to_owned());
        assert!(fine.unwrap().warnings.is_empty());
        // Beside an error, a warning is shown with it.
        let text = "resync_interval = \"0s\"\n[network]\nchain = [\"tuning\"]\n";
        assert_eq!(first_lines(text).len(), 2);
        // Refused at the start before, with no line.
        let text = "metrics_listen = \"localhost:9464\"\n[network]\nsubnet = \"10.77.0.0/33\"\n";
        assert_eq!(
            first_lines(text),
            [
                "p.toml:1:18: error: metrics_listen = \"localhost:9464\" is not an address and port; write it as \"127.0.0.1:9464\" (or \"\" for no metrics)",
                "p.toml:3:10: error: [network] subnet = \"10.77.0.0/33\" is not an IPv4 subnet with room for workloads (such as \"10.77.0.0/16\")",
            ]
        );
    }

    /// An integer past its type is refused at its line with its range, as
    /// a manifest's is, not in serde's words ("expected u32").
    #[test]
    fn integers_past_their_type_say_the_range() {
        assert_eq!(
            first_lines("[restart]\nmax_retries = 5000000000\n[remap]\nslice_size = 4294967296\n"),
            [
                "p.toml:2:15: error: `restart.max_retries` must be at most 4294967295, not 5000000000",
                "p.toml:4:14: error: `remap.slice_size` must be at most 4294967295, not 4294967296",
            ]
        );
        let fine = "[restart]\nmax_retries = 4294967295\n[remap]\nslice_size = 4294967295\n";
        Config::parse(Path::new("p.toml"), fine.to_owned()).unwrap();
    }

    #[test]
    fn integers_past_64_bits_say_the_range() {
        assert_eq!(
            first_lines("[restart]\nmax_retries = 99999999999999999999\n"),
            ["p.toml:2:15: error: `restart.max_retries` must be at most 4294967295, not 99999999999999999999"]
        );
    }

    /// An account file's errors say which key named it, and where.
    #[test]
    fn the_account_files_say_where_they_were_named() {
        let text = "[remap]\nuser = \"ops\"\nsubuid = \"/srv/subuid\"\n";
        let accounts = Config::parse(Path::new("/etc/p.toml"), text.to_owned()).unwrap().remap.accounts();
        assert_eq!(accounts.subuid.path, Path::new("/srv/subuid"));
        assert_eq!(accounts.subuid.named_by.to_string(), "named by `[remap] subuid` at /etc/p.toml:3:10");
        assert_eq!(
            accounts.subgid.named_by.to_string(),
            "the default of `[remap] subgid`, which /etc/p.toml does not set"
        );
    }

    #[test]
    fn metrics_addresses() {
        use super::metrics_address as m;
        assert_eq!(m(""), Ok(None));
        assert_eq!(m("9464").unwrap().unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(m("[::1]:9464").unwrap().unwrap().to_string(), "[::1]:9464");
        assert!(m("localhost:9464").unwrap_err().to_string().contains("write it as \"127.0.0.1:9464\""));
    }

    #[test]
    fn a_named_file_must_exist_the_default_one_need_not() {
        assert!(matches!(Config::load(Some(Path::new("/nonexistent/paddock.toml"))), Err(ConfigError::Read { .. })));
    }

    /// Read as root (these tests are), the configuration is trusted as the
    /// policies are: root's alone, a regular file, at most 1 MiB.
    #[test]
    fn a_configuration_others_could_change_is_refused_as_root() {
        use std::os::unix::fs::PermissionsExt;
        assert!(nix::unistd::geteuid().is_root(), "this test needs root (the checks are made for root only)");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paddock.toml");
        std::fs::write(&path, "policies = [\"privileged\"]\n").unwrap();
        assert!(Config::load(Some(&path)).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("the configuration: {} is writable by its group (mode 0664)", path.display()))
                && err.contains("chooses the policies"),
            "{err}"
        );
        // A client command only looks for the daemon's socket in it.
        assert!(Config::load_for_client(Some(&path)).is_ok());
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert_eq!(err, format!("the configuration: {} is not a regular file", path.display()));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert_eq!(err, format!("the configuration: {} is larger than 1048576 bytes", path.display()));
    }
}
