//! Networks for workloads: the built-in `bridge` network and the CNI
//! networks an operator defines, and attachments, which give a workload a
//! network namespace of its own, attached through the network's CNI
//! plugins, with its published ports, `/etc/hosts` and `/etc/resolv.conf`.
//!
//! An attachment outlives the sandboxes that run in it (a crashing
//! workload restarts in the same namespace, with the same address and
//! ports) and is undone only when its workload no longer wants it. It is
//! written down (`STATE_DIR/networks/NAME.json`) before the plugins run, so
//! a daemon that dies at any point leaves a record for its successor to
//! undo (CNI DEL) what it did.
//!
//! Here: the networks (the built-in one's configuration list, and those
//! of the networks directory) and their errors. An attachment, made and
//! undone, is in `attachment`; its records, read back by a successor, in
//! `records`.

mod attachment;
pub mod cni;
mod dns;
mod localnet;
mod records;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::NetworkConfig;
use crate::model::BRIDGE;
use crate::sandbox::netns;
pub use attachment::{Attachment, fits_as_made, in_use as port_in_use};
pub use cni::{CniError, ConfList, PluginDirs};

/// The interface a workload sees its network on.
pub const IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("[network] subnet = {0:?} is not an IPv4 subnet with room for workloads (such as \"10.77.0.0/16\")")]
    Subnet(String),
    #[error("the networks directory {path}: {message}")]
    Directory { path: PathBuf, message: String },
    #[error("{path}: the network `{name}` is defined twice (also in {other})")]
    Twice { path: PathBuf, name: String, other: PathBuf },
    #[error("{path}: `bridge` is the built-in network's name; give this network another")]
    ShadowsBuiltIn { path: PathBuf },
    #[error("no network `{0}` (it was removed from the networks directory?)")]
    Unknown(String),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("its record cannot be read ({0}); what it made cannot be undone by paddock")]
    Unreadable(String),
    #[error(
        "host port {0} is in use on this host (a host service has it): publishing it would take the port over, for the host's own connections too; publish another port, or stop that service"
    )]
    PortInUse(crate::model::PortMapping),
    #[error(
        "host port {port} is on an IPv{family} address, and the network `{network}` gave the workload no IPv{family} address: nothing would be published there; publish it on an address of a family the network gives, or leave the address out",
        family = if port.host_ip.is_some_and(|ip| ip.is_ipv6()) { 6 } else { 4 }
    )]
    PortFamily { port: crate::model::PortMapping, network: String },
    #[error(
        "host port {port} is published already by {holder}: portmap would send it to one of the two; publish another port, or stop that one first"
    )]
    PortPublished { port: crate::model::PortMapping, holder: String },
    #[error(
        "{} is held by another start for 10 s (a `paddock run -p` stopped with Ctrl-Z, say): its ports cannot be checked now",
        .path.display()
    )]
    PortsLocked { path: PathBuf },
    #[error("{0}")]
    Localnet(String),
    #[error(transparent)]
    NotUndone(Box<NotUndone>),
    #[error(
        "the network `{network}` cannot be attached to: its definition is refused ({refused}); mend it{}",
        if *.run { "" } else { ", then `paddock upgrade` reads it again, every workload kept running" }
    )]
    Refused { refused: Box<Refused>, network: String, run: bool },
}

/// A definition in the networks directory that paddock refused (or the
/// whole directory): the daemon runs without it, and says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The file, or the directory.
    pub path: PathBuf,
    /// The network it defines, the one refused: named by the file's
    /// `name`, as far as it can be read. None for a file whose network is
    /// another's (one named `bridge`), and where no name can be read.
    pub network: Option<String>,
    pub reason: String,
    /// Which network it defines cannot be told (the whole directory was
    /// refused, or a file's `name` cannot be read): it stands for every
    /// name no other file defines.
    pub unnamed: bool,
}

impl std::fmt::Display for Refused {
    /// The reason, which names the file (or the directory).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A `.conflist`, read and parsed; or why it is refused (naming it), with
/// the network it names when its `name` can be read.
fn read_conflist(path: &Path) -> Result<ConfList, (Option<String>, String)> {
    let origin = path.display().to_string();
    let text =
        crate::fsutil::read_trusted(path, CONFLIST_RISK, MAX_CONFLIST_BYTES).map_err(|e| (None, e.to_string()))?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| (None, format!("{origin}:{}:{}: not valid JSON: {e}", e.line(), e.column())))?;
    let name = raw.get("name").and_then(Value::as_str).map(str::to_owned);
    ConfList::parse(raw, &origin).map_err(|e| (name, e.to_string()))
}

/// An attachment that failed (its ADD, or a check after it) and could not
/// be undone (`cni::AddFailed`, `Networks::undo`).
#[derive(Debug, thiserror::Error)]
#[error("{error}; undoing what was attached failed too ({undo}): its record is kept, and undoing it is tried again")]
pub struct NotUndone {
    pub error: NetworkError,
    pub undo: CniError,
    /// What is left to undo, until its holder takes it (`take_leftover`).
    pub leftover: Option<Attachment>,
}

impl NetworkError {
    /// What a failed attachment left (`NotUndone`): whoever holds it
    /// undoes it (`Networks::detach`) before the workload's next attachment.
    pub fn take_leftover(&mut self) -> Option<Attachment> {
        match self {
            NetworkError::NotUndone(n) => n.leftover.take(),
            _ => None,
        }
    }

    /// Whether the host (or this process) was out of processes, threads,
    /// descriptors or space when a plugin or a thread was to start or a
    /// record to be written (`sandbox::is_exhausted`): the daemon's
    /// failure, retried without counting against the workload.
    pub fn host_exhausted(&self) -> bool {
        let errno = match self {
            NetworkError::NotUndone(n) => return n.error.host_exhausted(),
            NetworkError::Cni(CniError::Run { source, .. })
            | NetworkError::Netns(netns::NetnsError::Thread(source))
            | NetworkError::Write { source, .. } => source.raw_os_error(),
            _ => None,
        };
        errno.is_some_and(|e| crate::sandbox::is_exhausted(nix::errno::Errno::from_raw(e)))
    }

    /// Whether only the operator can mend it (install a plugin, fix a
    /// conflist, the configuration or the state directory); otherwise it
    /// may pass, and trying again is worth it.
    pub fn needs_the_operator(&self) -> bool {
        match self {
            NetworkError::Cni(
                CniError::Missing { .. }
                | CniError::Config { .. }
                | CniError::Untrusted { .. }
                | CniError::UntrustedDir { .. },
            ) => true,
            NetworkError::Cni(CniError::Run { .. } | CniError::Timeout { .. } | CniError::Failed { .. }) => false,
            // A host service may let its port go: tried again, with backoff.
            NetworkError::NotUndone(n) => n.error.needs_the_operator(),
            NetworkError::Netns(_)
            | NetworkError::Write { .. }
            | NetworkError::Unreadable(_)
            | NetworkError::PortInUse(_)
            | NetworkError::PortPublished { .. }
            | NetworkError::PortsLocked { .. }
            // iptables busy or failing: tried again, with backoff.
            | NetworkError::Localnet(_) => false,
            NetworkError::Subnet(_)
            | NetworkError::Directory { .. }
            | NetworkError::Twice { .. }
            | NetworkError::ShadowsBuiltIn { .. }
            | NetworkError::Unknown(_)
            | NetworkError::Refused { .. }
            | NetworkError::PortFamily { .. } => true,
        }
    }
}

/// The networks a manifest may name, and where attachments are kept.
#[derive(Debug, Clone)]
pub struct Networks {
    pub dirs: PluginDirs,
    lists: BTreeMap<String, ConfList>,
    /// `RUN_DIR`: network namespaces (netns/NAME) and the files each
    /// sandbox gets (etc/NAME/hosts, etc/NAME/resolv.conf).
    run_dir: PathBuf,
    /// `STATE_DIR/networks`: one record per attachment.
    records: PathBuf,
    /// These are `paddock run`'s (`for_runs`).
    runs: bool,
    /// What `load` refused in the networks directory.
    refused: Vec<Refused>,
    /// The directory's files that are not `*.conflist` (a CNI `.conf` of
    /// one plugin, say): not read, to be said.
    not_read: Vec<PathBuf>,
}

/// An IPv4 subnet, `a.b.c.d/n`.
pub fn parse_subnet(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| (8..=29).contains(l))?;
    // The network address itself, not a host in it.
    (u32::from(addr) & (u32::MAX >> len) == 0).then_some((addr, len))
}

/// The built-in network's configuration list.
pub fn builtin(config: &NetworkConfig, state_dir: &Path) -> Result<ConfList, NetworkError> {
    parse_subnet(&config.subnet).ok_or_else(|| NetworkError::Subnet(config.subnet.clone()))?;
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": config.bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": config.subnet }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            // paddock's own: what its records account for, nothing else's.
            "dataDir": state_dir.join("networks").join("ipam"),
        },
    })];
    for plugin in &config.chain {
        plugins.push(match plugin {
            crate::config::ChainPlugin::Portmap => {
                json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true })
            }
            crate::config::ChainPlugin::Firewall => json!({ "type": "firewall", "backend": "iptables" }),
            crate::config::ChainPlugin::Tuning => json!({ "type": "tuning" }),
            crate::config::ChainPlugin::Bandwidth => {
                json!({ "type": "bandwidth", "capabilities": { "bandwidth": true } })
            }
        });
    }
    let raw = json!({ "cniVersion": cni::CNI_VERSION, "name": BRIDGE, "plugins": plugins });
    Ok(ConfList::parse(raw, "the built-in network").expect("the built-in list is well formed"))
}

/// What the owner of a network's configuration could do, for `read_trusted`'s errors.
const CONFLIST_RISK: &str = "chooses what the CNI plugins paddock runs as root are told to do";

/// The largest `.conflist` read.
const MAX_CONFLIST_BYTES: u64 = 1 << 20;

impl Networks {
    /// The built-in network and every `*.conflist` in the networks
    /// directory (which may be missing; when present it must be root's
    /// and writable by root alone: its files choose what runs as root).
    /// A file that is not a valid list, a list called `bridge`, a name two
    /// files define, or the whole directory when it cannot be trusted, is
    /// refused (`refusals`) and the rest is loaded: one bad edit does not
    /// keep the daemon from starting, nor take away the networks of the
    /// workloads on it (`fits`). Only the built-in network's settings, in
    /// the configuration, are an error.
    pub fn load(config: &NetworkConfig, state_dir: &Path, run_dir: &Path) -> Result<Self, NetworkError> {
        let mut lists = BTreeMap::new();
        lists.insert(BRIDGE.to_owned(), builtin(config, state_dir)?);
        let mut networks = Networks {
            dirs: PluginDirs(config.plugin_dirs.clone()),
            lists: BTreeMap::new(),
            refused: Vec::new(),
            not_read: Vec::new(),
            run_dir: run_dir.to_owned(),
            records: state_dir.join("networks"),
            runs: false,
        };
        let dir = &config.networks_dir;
        let refuse_dir = |e: String| Refused {
            path: dir.clone(),
            network: None,
            reason: NetworkError::Directory { path: dir.clone(), message: e }.to_string(),
            unnamed: true,
        };
        let paths = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                networks.refused.push(refuse_dir(e.to_string()));
                Vec::new()
            }
            Ok(entries) => match crate::fsutil::check_directory(dir) {
                Err(e) => {
                    networks.refused.push(refuse_dir(e.to_string()));
                    Vec::new()
                }
                Ok(()) => {
                    let (mut paths, mut others): (Vec<PathBuf>, Vec<PathBuf>) = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .partition(|p| p.extension().is_some_and(|x| x == "conflist"));
                    paths.sort();
                    others.retain(|p| {
                        let name = p.file_name().unwrap_or_default().to_string_lossy();
                        p.is_file() && !crate::model::is_ignored_file_name(&name)
                    });
                    others.sort();
                    networks.not_read = others;
                    paths
                }
            },
        };
        // Each network's definitions: one is loaded, two are refused.
        let mut defined: BTreeMap<String, Vec<(PathBuf, ConfList)>> = BTreeMap::new();
        for path in paths {
            match read_conflist(&path) {
                Ok(list) if list.name == BRIDGE => networks.refused.push(Refused {
                    reason: NetworkError::ShadowsBuiltIn { path: path.clone() }.to_string(),
                    path,
                    network: None,
                    unnamed: false,
                }),
                Ok(list) => defined.entry(list.name.clone()).or_default().push((path, list)),
                Err((network, reason)) => {
                    let unnamed = network.is_none();
                    networks.refused.push(Refused { path, network, reason, unnamed });
                }
            }
        }
        for (name, mut found) in defined {
            if found.len() == 1 {
                let (_, list) = found.remove(0);
                lists.insert(name, list);
                continue;
            }
            let paths: Vec<PathBuf> = found.into_iter().map(|(p, _)| p).collect();
            for path in &paths {
                let other = paths.iter().find(|p| *p != path).cloned().unwrap_or_default();
                let reason = NetworkError::Twice { path: path.clone(), name: name.clone(), other }.to_string();
                let refused = Refused { path: path.clone(), network: Some(name.clone()), reason, unnamed: false };
                networks.refused.push(refused);
            }
        }
        networks.lists = lists;
        Ok(networks)
    }

    /// What was refused in the networks directory (see `load`).
    pub fn refusals(&self) -> &[Refused] {
        &self.refused
    }

    /// The networks directory's files `load` did not read: not `*.conflist`.
    pub fn not_read(&self) -> &[PathBuf] {
        &self.not_read
    }

    /// Why the network `name` is refused, when it is: its definition was,
    /// or one whose name cannot be read (or the whole directory) was,
    /// which stands for every name no other file defines.
    pub fn refusal(&self, name: &str) -> Option<&Refused> {
        if self.lists.contains_key(name) {
            return None;
        }
        let by_name = self.refused.iter().find(|r| r.network.as_deref() == Some(name));
        by_name.or_else(|| self.refused.iter().find(|r| r.unnamed))
    }

    /// For the validator (`Validator::with_refused_networks`).
    pub fn refused_for_validation(&self) -> crate::validate::RefusedNetworks {
        let mut by_name: Vec<(String, String)> = Vec::new();
        let mut all = None;
        for r in &self.refused {
            match &r.network {
                Some(name) if !self.lists.contains_key(name) => by_name.push((name.clone(), r.to_string())),
                Some(_) => {}
                None if r.unnamed => all = Some(r.to_string()),
                None => {}
            }
        }
        crate::validate::RefusedNetworks { by_name, all, kept: Vec::new() }
    }

    /// For the daemon's validator: as `refused_for_validation`, with the
    /// attachments its workloads have to those networks, made before
    /// their definition was refused. Read once, when the daemon starts:
    /// none can be made while the definition stays refused, so this only
    /// errs on the side of one undone since (a start that then fails,
    /// saying why, where nothing of the workload's runs).
    pub fn refused_for_daemon(&self) -> crate::validate::RefusedNetworks {
        let mut refused = self.refused_for_validation();
        if self.refused.is_empty() || self.runs {
            return refused;
        }
        refused.kept = self
            .recorded()
            .into_iter()
            .filter_map(|(workload, a)| {
                let a = a.ok()?;
                let usable = a.result.is_some() && !a.undoing && crate::sandbox::netns::exists(&a.netns);
                (usable && self.refusal(&a.network).is_some()).then_some((workload, a))
            })
            .collect();
        refused
    }

    /// `RUN_DIR`, where the network namespaces are kept.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The same networks for `paddock run`: its attachments are kept apart
    /// from the daemon's (RUN_DIR/run, STATE_DIR/networks/run), which
    /// never takes them for its own.
    pub fn for_runs(mut self) -> Self {
        self.run_dir = self.run_dir.join("run");
        self.records = self.records.join("run");
        self.runs = true;
        self
    }

    /// The names a manifest may give `namespaces.network` besides
    /// "private" and "host".
    pub fn names(&self) -> Vec<String> {
        self.lists.keys().cloned().collect()
    }

    /// Those that can publish a manifest's `ports`: a plugin of theirs
    /// takes portMappings.
    pub fn publishing(&self) -> Vec<String> {
        self.lists.iter().filter(|(_, l)| l.declares("portMappings")).map(|(n, _)| n.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&ConfList> {
        self.lists.get(name)
    }

    /// The networks whose plugins this host cannot run (not installed,
    /// or in a directory others could write), each with why: what a
    /// start of a workload on it would fail with, for `check` to warn of.
    pub fn unavailable(&self) -> Vec<(String, String)> {
        self.lists
            .iter()
            .filter_map(|(name, list)| Some((name.clone(), self.dirs.programs(list).err()?.to_string())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_ipv4_networks_with_room() {
        assert_eq!(parse_subnet("10.77.0.0/16"), Some((Ipv4Addr::new(10, 77, 0, 0), 16)));
        for bad in ["10.77.0.1/16", "10.77.0.0", "10.77.0.0/30", "fd00::/64", "10.77.0.0/x"] {
            assert_eq!(parse_subnet(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_bad_definition_is_refused_alone_and_the_rest_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let list =
            |name: &str| json!({"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "bridge"}]}).to_string();
        // Files named as in /etc/cni/net.d: the network is the list's name.
        for (file, text) in [
            ("10-lan.conflist", list("lan")),
            ("20-wan.conflist", json!({"cniVersion": "1.0.0", "name": "wan", "plugins": []}).to_string()),
            ("mine.conflist", list("bridge")),
            ("a.conflist", list("dup")),
            ("b.conflist", list("dup")),
            ("notes.txt", "not a network".to_owned()),
            ("87-podman.conf", list("podman")),
            (".10-lan.conflist.swp", String::new()),
        ] {
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        let config = NetworkConfig { networks_dir: dir.path().to_owned(), ..NetworkConfig::default() };
        let networks = Networks::load(&config, Path::new("/s"), Path::new("/r")).unwrap();
        assert_eq!(networks.names(), ["bridge", "lan"]);
        // Not read, and said (an editor's swap file is not).
        assert_eq!(networks.not_read(), [dir.path().join("87-podman.conf"), dir.path().join("notes.txt")]);
        let refused: Vec<(Option<&str>, &str)> =
            networks.refusals().iter().map(|r| (r.network.as_deref(), r.reason.as_str())).collect();
        let at = |file: &str| dir.path().join(file).display().to_string();
        assert_eq!(refused.len(), 4, "{refused:?}");
        let shadows =
            format!("{}: `bridge` is the built-in network's name; give this network another", at("mine.conflist"));
        assert!(refused.contains(&(None, &*shadows)), "{refused:?}");
        assert!(refused.iter().any(|(n, r)| *n == Some("wan") && r.starts_with(&at("20-wan.conflist"))), "{refused:?}");
        for (file, other) in [("a.conflist", "b.conflist"), ("b.conflist", "a.conflist")] {
            let reason = format!("{}: the network `dup` is defined twice (also in {})", at(file), at(other));
            assert!(refused.contains(&(Some("dup"), &*reason)), "{refused:?}");
        }
        assert!(networks.refusal("lan").is_none() && networks.refusal("bridge").is_none());
        assert!(networks.refusal("dup").is_some() && networks.refusal("wan").is_some());
        assert!(networks.refusal("other").is_none(), "a name no file defines is unknown, not refused");
        let validation = networks.refused_for_validation();
        assert_eq!(validation.all, None);
        assert!(validation.reason("dup").is_some_and(|r| r.contains("defined twice")));

        // A file whose name cannot be read (not JSON): which network it
        // defines cannot be told, so it stands for every name no other
        // file defines.
        std::fs::write(dir.path().join("30-typo.conflist"), "{ \"cniVersion\": \"1.0.0\",\n  \"name\": }").unwrap();
        let networks = Networks::load(&config, Path::new("/s"), Path::new("/r")).unwrap();
        let refusal = networks.refusal("other").expect("an unnamed refusal stands for it");
        assert!(
            refusal.unnamed && refusal.reason.starts_with(&format!("{}:2:11: not valid JSON", at("30-typo.conflist")))
        );
        assert!(networks.refusal("lan").is_none(), "a network defined is not refused");
        assert!(networks.refusal("wan").is_some_and(|r| !r.unnamed), "named, its own reason");
        assert!(networks.refused_for_validation().reason("other").is_some());

        // A directory others could write: every definition in it refused,
        // each name it could define standing refused with it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let networks = Networks::load(&config, Path::new("/s"), Path::new("/r")).unwrap();
        assert_eq!(networks.names(), ["bridge"]);
        let refusal = networks.refusal("lan").expect("refused with its directory");
        assert!(refusal.unnamed && refusal.reason.contains("writable by group and others"), "{refusal:?}");
        assert!(networks.refused_for_validation().reason("anything").is_some());
        // The built-in network's own settings are the configuration's: an error.
        let bad = NetworkConfig { subnet: "10.77.0.1/16".into(), ..config };
        assert!(Networks::load(&bad, Path::new("/s"), Path::new("/r")).is_err());
    }

    #[test]
    fn the_builtin_network_is_a_bridge_with_paddocks_own_addresses_and_the_chain() {
        let c = NetworkConfig::default();
        let list = builtin(&c, Path::new("/var/lib/paddock")).unwrap();
        assert_eq!(list.name, "bridge");
        assert_eq!(list.types().collect::<Vec<_>>(), ["bridge", "portmap", "firewall"]);
        assert_eq!(list.plugins[0]["bridge"], "paddock0");
        assert_eq!(list.plugins[0]["ipam"]["dataDir"], "/var/lib/paddock/networks/ipam");
        assert_eq!(list.plugins[0]["ipam"]["ranges"][0][0]["subnet"], "10.77.0.0/16");
        let bad = NetworkConfig { subnet: "10.77.0.1/16".into(), ..c };
        assert!(builtin(&bad, Path::new("/s")).unwrap_err().to_string().contains("not an IPv4 subnet"));
    }
}
