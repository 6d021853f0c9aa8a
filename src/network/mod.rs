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

pub mod cni;
mod dns;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::NetworkConfig;
use crate::model::{BRIDGE, Manifest, PortMapping, WorkloadName};
use crate::sandbox::netns;
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
}

impl NetworkError {
    /// Whether only the operator can mend it (install a plugin, fix a
    /// conflist, the configuration or the state directory); otherwise it
    /// may pass, and trying again is worth it.
    pub fn needs_the_operator(&self) -> bool {
        match self {
            NetworkError::Cni(CniError::Missing { .. } | CniError::Config { .. }) => true,
            NetworkError::Cni(CniError::Run { .. } | CniError::Timeout { .. } | CniError::Failed { .. }) => false,
            NetworkError::Netns(_) | NetworkError::Write { .. } | NetworkError::Unreadable(_) => false,
            NetworkError::Subnet(_)
            | NetworkError::Directory { .. }
            | NetworkError::Twice { .. }
            | NetworkError::ShadowsBuiltIn { .. }
            | NetworkError::Unknown(_) => true,
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
}

/// A workload's attachment to a network, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    /// The configuration list as used: an attachment is undone with what
    /// made it, whatever the network's definition says now.
    pub config: Value,
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub ports: Vec<PortMapping>,
    /// What the network's settings for the workload were (network, its
    /// definition, ports, hostname): an attachment is reused while this
    /// stays the same.
    pub fingerprint: u64,
    /// The last plugin's result; None while the ADD has not finished.
    pub result: Option<Value>,
    /// The files mounted over the workload's /etc/hosts and /etc/resolv.conf.
    #[serde(default)]
    pub hosts: Option<PathBuf>,
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
}

impl Attachment {
    /// `manifest` with this attachment's /etc/hosts and /etc/resolv.conf
    /// mounted read-only, unless it mounts its own there (paths compare
    /// by their components: `/etc//hosts` is `/etc/hosts`).
    pub fn mounted_into(&self, manifest: &crate::model::Manifest) -> crate::model::Manifest {
        let mut m = manifest.clone();
        for (file, target) in [(&self.hosts, "/etc/hosts"), (&self.resolv_conf, "/etc/resolv.conf")] {
            let Some(file) = file else { continue };
            if m.mounts.iter().any(|mt| mt.target == Path::new(target)) {
                continue;
            }
            m.mounts.push(crate::model::Mount {
                source: file.clone(),
                target: target.into(),
                readonly: true,
                idmap: false,
                setuid: false,
                devices: false,
            });
        }
        m
    }
}

impl Attachment {
    /// The workload's addresses (CIDR), from the result.
    pub fn addresses(&self) -> Vec<String> {
        self.result.as_ref().map(cni::addresses).unwrap_or_default()
    }

    fn target<'a>(&'a self, capabilities: &'a Map<String, Value>) -> cni::Target<'a> {
        cni::Target { container_id: &self.container_id, netns: &self.netns, ifname: &self.ifname, capabilities }
    }
}

/// The `portMappings` capability argument, as the portmap plugin reads it.
fn capabilities(ports: &[PortMapping]) -> Map<String, Value> {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.to_string(),
                "hostIP": p.host_ip.filter(|ip| !ip.is_unspecified()).map(|ip| ip.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    let mut caps = Map::new();
    if !mappings.is_empty() {
        caps.insert("portMappings".into(), Value::Array(mappings));
    }
    caps
}

/// FNV-1a, 64 bits, over what decides an attachment.
fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// An IPv4 subnet, `a.b.c.d/n`.
fn parse_subnet(s: &str) -> Option<(Ipv4Addr, u8)> {
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

impl Networks {
    /// The built-in network and every `*.conflist` in the networks
    /// directory (which may be missing; when present it must be root's
    /// and writable by root alone: its files choose what runs as root).
    pub fn load(config: &NetworkConfig, state_dir: &Path, run_dir: &Path) -> Result<Self, NetworkError> {
        let mut lists = BTreeMap::new();
        lists.insert(BRIDGE.to_owned(), builtin(config, state_dir)?);
        let mut origins: BTreeMap<String, PathBuf> = BTreeMap::new();
        let dir = &config.networks_dir;
        let dir_error = |message: String| NetworkError::Directory { path: dir.clone(), message };
        match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(dir_error(e.to_string())),
            Ok(entries) => {
                crate::fsutil::check_directory(dir).map_err(|e| dir_error(e.to_string()))?;
                let mut paths: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
                    .collect();
                paths.sort();
                for path in paths {
                    let origin = path.display().to_string();
                    let text = std::fs::read_to_string(&path).map_err(|e| dir_error(format!("{origin}: {e}")))?;
                    let raw: Value = serde_json::from_str(&text).map_err(|e| {
                        NetworkError::Cni(CniError::Config {
                            origin: format!("{origin}:{}:{}", e.line(), e.column()),
                            message: format!("not valid JSON: {e}"),
                        })
                    })?;
                    let list = ConfList::parse(raw, &origin)?;
                    if list.name == BRIDGE {
                        return Err(NetworkError::ShadowsBuiltIn { path });
                    }
                    if let Some(other) = origins.get(&list.name) {
                        return Err(NetworkError::Twice { path, name: list.name, other: other.clone() });
                    }
                    origins.insert(list.name.clone(), path);
                    lists.insert(list.name.clone(), list);
                }
            }
        }
        Ok(Networks {
            dirs: PluginDirs(config.plugin_dirs.clone()),
            lists,
            run_dir: run_dir.to_owned(),
            records: state_dir.join("networks"),
        })
    }

    /// The same networks for `paddock run`: its attachments are kept apart
    /// from the daemon's (RUN_DIR/run, STATE_DIR/networks/run), which
    /// never takes them for its own.
    pub fn for_runs(mut self) -> Self {
        self.run_dir = self.run_dir.join("run");
        self.records = self.records.join("run");
        self
    }

    /// The attachments of `paddock run`s that are gone (each is recorded
    /// as `run<PID>`; a run that ended normally undid its own), undone now.
    /// For `for_runs()` networks.
    pub fn undo_abandoned_runs(&self) -> Vec<(WorkloadName, Result<(), NetworkError>)> {
        let gone = |name: &WorkloadName| {
            name.as_str()
                .strip_prefix("run")
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        self.recorded()
            .into_iter()
            .filter(|(name, _)| gone(name))
            .map(|(name, read)| {
                let undone = match read {
                    Ok(a) => self.detach(&name, &a),
                    Err(e) => {
                        self.drop_record(&name);
                        Err(NetworkError::Unreadable(e))
                    }
                };
                (name, undone)
            })
            .collect()
    }

    /// The names a manifest may give `namespaces.network` besides
    /// "private" and "host".
    pub fn names(&self) -> Vec<String> {
        self.lists.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<&ConfList> {
        self.lists.get(name)
    }

    fn netns_path(&self, workload: &WorkloadName) -> PathBuf {
        self.run_dir.join("netns").join(workload.as_str())
    }

    fn etc_dir(&self, workload: &WorkloadName) -> PathBuf {
        self.run_dir.join("etc").join(workload.as_str())
    }

    fn record_path(&self, workload: &WorkloadName) -> PathBuf {
        self.records.join(format!("{workload}.json"))
    }

    /// What decides a workload's attachment: an attachment made for the
    /// same fingerprint is reused. None when the manifest wants none.
    pub fn fingerprint(&self, workload: &WorkloadName, m: &Manifest) -> Option<u64> {
        let name = m.namespaces.network.cni()?;
        let list = self.lists.get(name).map(|l| l.raw.to_string()).unwrap_or_default();
        let ports: Vec<String> = m.ports.iter().map(ToString::to_string).collect();
        let hostname = m.hostname.as_deref().unwrap_or(workload.as_str());
        Some(fingerprint(&[name.as_bytes(), list.as_bytes(), ports.join(",").as_bytes(), hostname.as_bytes()]))
    }

    /// Attaches a workload to the network its manifest names: a network
    /// namespace, the plugins' ADD, its hosts and resolv.conf. Blocking
    /// (the plugins take tens of milliseconds each). On error nothing is
    /// left: no namespace, no record, and the plugins' work undone.
    pub fn attach(&self, workload: &WorkloadName, m: &Manifest) -> Result<Attachment, NetworkError> {
        let name = m.namespaces.network.cni().ok_or_else(|| NetworkError::Unknown("private".into()))?;
        let list = self.lists.get(name).ok_or_else(|| NetworkError::Unknown(name.to_owned()))?;
        // Every plugin is there before anything is made.
        for t in list.types() {
            self.dirs.find(t)?;
        }
        let fingerprint = self.fingerprint(workload, m).expect("a CNI network");
        let netns_path = self.netns_path(workload);
        crate::fsutil::create_private_dir(&self.run_dir.join("netns"))
            .and_then(|()| crate::fsutil::create_private_dir(&self.records))
            .map_err(|source| NetworkError::Write { path: self.records.clone(), source })?;
        // What a predecessor left at this path, unrecorded, goes.
        netns::remove(&netns_path);
        netns::create(&netns_path)?;
        let mut attachment = Attachment {
            network: name.to_owned(),
            config: list.raw.clone(),
            container_id: format!("paddock-{workload}-{:08x}", random()),
            ifname: IFNAME.to_owned(),
            netns: netns_path.clone(),
            ports: m.ports.clone(),
            fingerprint,
            result: None,
            hosts: None,
            resolv_conf: None,
        };
        // Recorded before any plugin runs: whatever happens next, a
        // successor can undo it.
        if let Err(e) = self.record(workload, &attachment) {
            netns::remove(&netns_path);
            return Err(e);
        }
        let caps = capabilities(&m.ports);
        let runtime = cni::Runtime { dirs: &self.dirs };
        let result = match runtime.add(list, attachment.target(&caps)) {
            Ok(result) => result,
            Err(e) => {
                netns::remove(&netns_path);
                let _ = std::fs::remove_file(self.record_path(workload));
                return Err(e.into());
            }
        };
        attachment.result = Some(result);
        let hostname = m.hostname.clone().unwrap_or_else(|| workload.to_string());
        let made = self.write_etc(workload, &hostname, &attachment).and_then(|(hosts, resolv)| {
            attachment.hosts = Some(hosts);
            attachment.resolv_conf = Some(resolv);
            self.record(workload, &attachment)
        });
        if let Err(e) = made {
            let _ = self.detach(workload, &attachment);
            return Err(e);
        }
        Ok(attachment)
    }

    /// Undoes an attachment: the plugins' DEL (in reverse, with the cached
    /// result), the namespace, the files and the record. Blocking. The
    /// record goes only once every plugin's DEL succeeded, so what failed
    /// is tried again by the next daemon to start.
    pub fn detach(&self, workload: &WorkloadName, a: &Attachment) -> Result<(), NetworkError> {
        let list = ConfList::parse(a.config.clone(), &format!("the recorded network of {workload}"))?;
        let caps = capabilities(&a.ports);
        let runtime = cni::Runtime { dirs: &self.dirs };
        let deleted = runtime.del(&list, a.target(&caps), a.result.as_ref());
        netns::remove(&a.netns);
        let _ = std::fs::remove_dir_all(self.etc_dir(workload));
        deleted?;
        let _ = std::fs::remove_file(self.record_path(workload));
        Ok(())
    }

    /// CHECK: the plugins confirm the attachment is as they made it.
    pub fn check(&self, a: &Attachment) -> Result<(), NetworkError> {
        let list = ConfList::parse(a.config.clone(), "a recorded network")?;
        let caps = capabilities(&a.ports);
        let Some(result) = &a.result else { return Ok(()) };
        Ok(cni::Runtime { dirs: &self.dirs }.check(&list, a.target(&caps), result)?)
    }

    fn record(&self, workload: &WorkloadName, a: &Attachment) -> Result<(), NetworkError> {
        let path = self.record_path(workload);
        let bytes = serde_json::to_vec_pretty(a).expect("an attachment serializes");
        crate::fsutil::write_atomic(&path, &bytes, 0o600).map_err(|source| NetworkError::Write { path, source })
    }

    /// Every recorded attachment, by workload (a record that cannot be
    /// read is returned as such, to be reported).
    pub fn recorded(&self) -> Vec<(WorkloadName, Result<Attachment, String>)> {
        let Ok(entries) = std::fs::read_dir(&self.records) else { return Vec::new() };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Ok(name) = WorkloadName::try_from(stem) else { continue };
            let read = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Attachment>(&b).map_err(|e| e.to_string()));
            found.push((name, read));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Forgets a record that cannot be read (its attachment cannot be
    /// undone by paddock: the caller says so).
    pub fn drop_record(&self, workload: &WorkloadName) {
        let _ = std::fs::remove_file(self.record_path(workload));
    }

    /// Namespace mount points under RUN_DIR/netns with no record: a
    /// daemon died between making one and recording it.
    pub fn stray_namespaces(&self, recorded: &[WorkloadName]) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.run_dir.join("netns")) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| !recorded.iter().any(|r| e.file_name().to_str() == Some(r.as_str())))
            .map(|e| e.path())
            .collect()
    }

    fn write_etc(
        &self,
        workload: &WorkloadName,
        hostname: &str,
        a: &Attachment,
    ) -> Result<(PathBuf, PathBuf), NetworkError> {
        let dir = self.etc_dir(workload);
        let write = |path: &Path, text: &str| -> Result<(), NetworkError> {
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(path, text))
                .and_then(|()| std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)))
                .map_err(|source| NetworkError::Write { path: path.to_owned(), source })
        };
        let (hosts, resolv) = (dir.join("hosts"), dir.join("resolv.conf"));
        let addresses: Vec<String> =
            a.addresses().iter().map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_owned()).collect();
        write(&hosts, &dns::hosts(hostname, &addresses))?;
        write(&resolv, &dns::resolv_conf())?;
        Ok((hosts, resolv))
    }
}

/// 32 random bits, for container ids (no dependency).
fn random() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we pass.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 4 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.subsec_nanos() ^ std::process::id();
    }
    u32::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workloads_own_hosts_or_resolv_conf_wins_however_its_path_is_written() {
        let a = Attachment {
            network: "bridge".into(),
            config: Value::Null,
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: "/run/paddock/netns/web".into(),
            ports: Vec::new(),
            fingerprint: 0,
            result: None,
            hosts: Some("/run/paddock/etc/web/hosts".into()),
            resolv_conf: Some("/run/paddock/etc/web/resolv.conf".into()),
        };
        let m: crate::model::Manifest =
            toml::from_str("command = [\"x\"]\n[[mounts]]\nsource = \"/srv/hosts\"\ntarget = \"/etc//./hosts\"\n")
                .unwrap();
        let targets: Vec<_> = a.mounted_into(&m).mounts.into_iter().map(|mt| (mt.source, mt.target)).collect();
        assert_eq!(
            targets,
            [
                ("/srv/hosts".into(), "/etc//./hosts".into()),
                ("/run/paddock/etc/web/resolv.conf".into(), "/etc/resolv.conf".into())
            ]
        );
    }

    #[test]
    fn subnets_are_ipv4_networks_with_room() {
        assert_eq!(parse_subnet("10.77.0.0/16"), Some((Ipv4Addr::new(10, 77, 0, 0), 16)));
        for bad in ["10.77.0.1/16", "10.77.0.0", "10.77.0.0/30", "fd00::/64", "10.77.0.0/x"] {
            assert_eq!(parse_subnet(bad), None, "{bad}");
        }
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

    #[test]
    fn ports_reach_portmap_as_its_capability_argument() {
        let ports: Vec<PortMapping> =
            ["8080:80", "127.0.0.1:5353:53/udp", "0.0.0.0:9000:9000"].iter().map(|p| p.parse().unwrap()).collect();
        let caps = capabilities(&ports);
        assert_eq!(
            caps["portMappings"],
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
                {"hostPort": 9000, "containerPort": 9000, "protocol": "tcp", "hostIP": ""},
            ])
        );
        assert!(capabilities(&[]).is_empty());
    }
}
