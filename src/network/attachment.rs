//! A workload's attachment to a network: a network namespace of its own,
//! the network's CNI plugins run on it (ADD, DEL) with its
//! published ports, and the `/etc/hosts` and `/etc/resolv.conf` mounted
//! into its sandbox. Made once and reused while the settings that decide
//! it (its fingerprint) stay the same.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ConfList, IFNAME, NetworkError, Networks, cni, dns};
use crate::model::{Manifest, PortMapping, WorkloadName};
use crate::sandbox::netns;

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
    /// While the ADD has not finished (or its undoing failed): the result
    /// of the plugins that ran, recorded before the next one runs, for the
    /// DEL to give them. A daemon killed while a plugin runs leaves this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so_far: Option<Value>,
    /// The files mounted over the workload's /etc/hosts and /etc/resolv.conf.
    #[serde(default)]
    pub hosts: Option<PathBuf>,
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// Its undoing has begun (recorded before the first DEL): whatever of
    /// it is left is never reused, by this daemon or a successor, only
    /// undone again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undoing: bool,
}

impl Attachment {
    /// The files paddock wrote for it (/etc/hosts, /etc/resolv.conf), which
    /// `mounted_into` mounts.
    pub fn files(&self) -> Vec<PathBuf> {
        self.hosts.iter().chain(&self.resolv_conf).cloned().collect()
    }

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
                kernel_filesystems: false,
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

/// What decides a workload's attachment to the network `name`, defined
/// by `list` (its text), hashed.
fn settings(workload: &WorkloadName, m: &Manifest, name: &str, list: &str) -> u64 {
    let ports: Vec<String> = m.ports.iter().map(ToString::to_string).collect();
    let hostname = m.hostname.as_deref().unwrap_or(workload.as_str());
    fingerprint(&[name.as_bytes(), list.as_bytes(), ports.join(",").as_bytes(), hostname.as_bytes()])
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

/// Whether `a` was made for the settings `m` gives, with the definition
/// it was made with standing for its network's: what `Networks::fits`
/// says of an attachment to a network whose definition is refused.
pub fn fits_as_made(workload: &WorkloadName, m: &Manifest, a: &Attachment) -> bool {
    m.namespaces.network.cni() == Some(a.network.as_str())
        && settings(workload, m, &a.network, &a.config.to_string()) == a.fingerprint
}

impl Networks {
    pub(super) fn netns_path(&self, workload: &WorkloadName) -> PathBuf {
        self.run_dir.join("netns").join(workload.as_str())
    }

    fn etc_dir(&self, workload: &WorkloadName) -> PathBuf {
        self.run_dir.join("etc").join(workload.as_str())
    }

    /// What decides a workload's attachment: an attachment made for the
    /// same fingerprint is reused. None when the manifest wants none.
    pub fn fingerprint(&self, workload: &WorkloadName, m: &Manifest) -> Option<u64> {
        let name = m.namespaces.network.cni()?;
        let list = self.lists.get(name).map(|l| l.raw.to_string()).unwrap_or_default();
        Some(settings(workload, m, name, &list))
    }

    /// Whether `a` is the attachment `m` wants now: made for the same
    /// settings. While the network's definition is refused (a bad edit of
    /// its file), the definition `a` was made with stands for it: the
    /// workload keeps the network it has, as a bad edit of its manifest
    /// keeps the running version.
    pub fn fits(&self, workload: &WorkloadName, m: &Manifest, a: &Attachment) -> bool {
        let Some(name) = m.namespaces.network.cni() else { return false };
        match self.lists.get(name) {
            Some(list) => settings(workload, m, name, &list.raw.to_string()) == a.fingerprint,
            None if self.refusal(name).is_some() => fits_as_made(workload, m, a),
            None => false,
        }
    }

    /// What a start of `m` would be refused on this host now for want of
    /// a new attachment: a plugin of its network missing or not root's
    /// alone (`CniError`), a host port a host service has (`PortInUse`).
    /// Nothing when `m` fits the attachment the workload has (its record,
    /// usable: a crash or an edit of its command reuses it, and needs
    /// neither plugins nor ports again), nor when `m` wants no network or
    /// names one that is unknown or refused (the validator says so).
    /// Looked up at each call (a record read, a few stats, the socket
    /// tables), so a plugin installed or a port freed since counts.
    pub fn refused_now(&self, workload: &WorkloadName, m: &Manifest) -> Vec<NetworkError> {
        let Some(list) = m.namespaces.network.cni().and_then(|name| self.lists.get(name)) else {
            return Vec::new();
        };
        if self.current(workload).is_some_and(|a| self.fits(workload, m, &a)) {
            return Vec::new();
        }
        let programs = self.dirs.programs(list).err().map(NetworkError::Cni);
        let ports = m.ports.iter().filter(|p| in_use(p)).map(|p| NetworkError::PortInUse(*p));
        programs.into_iter().chain(ports).collect()
    }

    /// The attachment a workload has now, as its record says, if it can be
    /// reused: made, not being undone, its namespace there.
    fn current(&self, workload: &WorkloadName) -> Option<Attachment> {
        let bytes = std::fs::read(self.record_path(workload)).ok()?;
        let a: Attachment = serde_json::from_slice(&bytes).ok()?;
        (a.result.is_some() && !a.undoing && netns::exists(&a.netns)).then_some(a)
    }

    /// Attaches a workload to the network its manifest names: a network
    /// namespace, the plugins' ADD, its hosts and resolv.conf. Blocking
    /// (the plugins take tens of milliseconds each). On error nothing is
    /// left: no namespace, no record, and the plugins' work undone.
    pub fn attach(&self, workload: &WorkloadName, m: &Manifest) -> Result<Attachment, NetworkError> {
        let name = m.namespaces.network.cni().ok_or_else(|| NetworkError::Unknown("private".into()))?;
        let list = self.lists.get(name).ok_or_else(|| match self.refusal(name) {
            Some(refused) => {
                NetworkError::Refused { refused: Box::new(refused.clone()), network: name.to_owned(), run: self.runs }
            }
            None => NetworkError::Unknown(name.to_owned()),
        })?;
        // Every plugin is there (and root's alone) before anything is made.
        let programs = self.dirs.programs(list)?;
        let fingerprint = self.fingerprint(workload, m).expect("a CNI network");
        // portmap's rules would take a host service's port over, for the
        // host's own connections too: a port in use is not published.
        for port in &m.ports {
            if in_use(port) {
                return Err(NetworkError::PortInUse(*port));
            }
        }
        // A `paddock run` killed with -9 holds nothing, but its rules for
        // these ports would come before the workload's: undone first.
        if !self.runs && !m.ports.is_empty() {
            let collides = |a: &Attachment| a.ports.iter().any(|p| m.ports.iter().any(|q| p.collides_with(q)));
            for (run, undone) in self.clone().for_runs().undo_gone_runs(collides) {
                match undone {
                    Ok(()) => {
                        tracing::info!(run = %run, workload = %workload, "undid the network of a `paddock run` that was killed, which published a port this workload publishes")
                    }
                    Err(e) => {
                        tracing::warn!(run = %run, error = %e, "cannot undo the network of a `paddock run` that was killed")
                    }
                }
            }
        }
        let netns_path = self.netns_path(workload);
        crate::fsutil::create_private_dir(&self.run_dir.join("netns"))
            .and_then(|()| crate::fsutil::create_private_dir(&self.records))
            .map_err(|source| NetworkError::Write { path: self.records.clone(), source })?;
        // portmap turns route_localnet on for the bridge: what would reach
        // the host's loopback through it is dropped first (`localnet`).
        if !m.ports.is_empty() {
            let _lock = self.lock_localnet().map_err(NetworkError::Localnet)?;
            super::localnet::guard_bridges(list).map_err(NetworkError::Localnet)?;
        }
        // Held until the record says this attachment publishes its ports.
        let ports_lock = if m.ports.is_empty() { None } else { Some(self.lock_ports()?) };
        if let Some((port, holder)) = self.published_elsewhere(workload, &m.ports) {
            return Err(NetworkError::PortPublished { port, holder });
        }
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
            so_far: None,
            hosts: None,
            resolv_conf: None,
            undoing: false,
        };
        // Recorded before any plugin runs: whatever happens next, a
        // successor can undo it.
        if let Err(e) = self.record(workload, &attachment) {
            netns::remove(&netns_path);
            return Err(e);
        }
        drop(ports_lock);
        let caps = capabilities(&m.ports);
        let runtime = cni::Runtime { dirs: &self.dirs };
        // Best effort, as the undoing mark: a state disk that fails now
        // loses only what a crash in this ADD would leave (the firewall
        // plugin's rules).
        let mut recording = attachment.clone();
        let mut before = |so_far: &Value| {
            recording.so_far = Some(so_far.clone());
            if let Err(e) = self.record(workload, &recording) {
                tracing::warn!(workload = %workload, error = %e, "cannot record the network's result so far");
            }
        };
        let added = runtime.add(list, &programs, attachment.target(&caps), &mut before).map_err(|failed| *failed);
        let result = match added {
            Ok(result) => result,
            Err(cni::AddFailed { error, undone: Ok(()), .. }) => {
                netns::remove(&netns_path);
                let _ = std::fs::remove_file(self.record_path(workload));
                return Err(error.into());
            }
            // What the plugins before the failing one did stays until a
            // DEL succeeds: the record (and the namespace it names) are
            // kept, for `detach` to be tried again.
            Err(cni::AddFailed { error, undone: Err(undo), so_far }) => {
                attachment.so_far = so_far;
                if let Err(e) = self.record(workload, &attachment) {
                    tracing::warn!(workload = %workload, error = %e, "cannot record the network's result so far");
                }
                let (error, leftover) = (NetworkError::Cni(error), Some(attachment));
                return Err(NetworkError::NotUndone(Box::new(super::NotUndone { error, undo, leftover })));
            }
        };
        attachment.result = Some(result);
        // portmap's route_localnet would let the workloads reach the host's loopback.
        let guarded =
            self.lock_localnet().and_then(|_lock| attachment.result.as_ref().map_or(Ok(()), super::localnet::guard));
        if let Err(e) = guarded {
            return Err(self.undo(workload, attachment, NetworkError::Localnet(e)));
        }
        // portmap skips a mapping whose host address is of a family the
        // workload was given no address in: listed, and not published.
        let given = attachment.addresses();
        if let Some(port) = m.ports.iter().find(|p| p.host_ip.is_some_and(|ip| !has_family(&given, ip))) {
            let refused = NetworkError::PortFamily { port: *port, network: name.to_owned() };
            return Err(self.undo(workload, attachment, refused));
        }
        let hostname = m.hostname.clone().unwrap_or_else(|| workload.to_string());
        let made = self.write_etc(workload, &hostname, &attachment).and_then(|(hosts, resolv)| {
            attachment.hosts = Some(hosts);
            attachment.resolv_conf = Some(resolv);
            self.record(workload, &attachment)
        });
        if let Err(e) = made {
            return Err(self.undo(workload, attachment, e));
        }
        Ok(attachment)
    }

    /// Undoes an attachment made in vain, for `error`. What cannot be
    /// undone is kept, record and all, to be tried again (`NotUndone`).
    fn undo(&self, workload: &WorkloadName, mut attachment: Attachment, error: NetworkError) -> NetworkError {
        match self.detach(workload, &mut attachment) {
            Ok(()) => error,
            Err(NetworkError::Cni(undo)) => {
                NetworkError::NotUndone(Box::new(super::NotUndone { error, undo, leftover: Some(attachment) }))
            }
            Err(other) => other,
        }
    }

    /// Undoes an attachment: the plugins' DEL (in reverse, with the cached
    /// result), the namespace, the files and the record. Blocking. The
    /// namespace and the record go only once every plugin's DEL succeeded,
    /// so what failed is tried again (by this daemon or the next) in the
    /// namespace the plugins made it in: the bridge plugin finds the rules
    /// it must remove from the addresses in there.
    ///
    /// `a` is marked undoing first, and so is its record: what is left of
    /// it after a DEL that failed is never reused, by this daemon (which
    /// keeps `a`) or the next. The record's mark is best effort: a state
    /// disk that cannot take it does not keep the DELs from running.
    pub fn detach(&self, workload: &WorkloadName, a: &mut Attachment) -> Result<(), NetworkError> {
        let list = ConfList::parse(a.config.clone(), &format!("the recorded network of {workload}"))?;
        let caps = capabilities(&a.ports);
        let runtime = cni::Runtime { dirs: &self.dirs };
        // Marked in the record at each try: in memory it may have been
        // marked when its release was queued.
        a.undoing = true;
        if let Err(e) = self.record(workload, a) {
            tracing::warn!(workload = %workload, error = %e, "cannot record that its network is being undone; undoing it anyway");
        }
        // Its namespace went with the mount namespace the mount was made in
        // (a daemon's own, killed): the plugins are given no file that is
        // no namespace (they refused it, and the DEL failed for ever), but
        // none at all, and undo what lies outside it (addresses, rules).
        if netns::is_left_behind(&a.netns) {
            tracing::warn!(
                workload = %workload,
                netns = %a.netns.display(),
                container_id = a.container_id,
                "its network namespace is gone (its mount went with the daemon that made it): undoing the rest of its network (the masquerade rules the bridge plugin finds by the addresses in there, commented with this container_id, by that id)"
            );
            let _ = std::fs::remove_file(&a.netns);
        }
        runtime.del(&list, a.target(&caps), a.result.as_ref().or(a.so_far.as_ref()))?;
        // What a DEL cut short (a daemon killed with -9 kills its plugins)
        // left for a later DEL to miss: the bridge plugin finds its
        // masquerade rules by the workload's interface's addresses, gone
        // by then. Those rules carry this attachment's container id.
        if let Err(e) = remove_commented_nat_rules(&a.container_id) {
            tracing::warn!(workload = %workload, container_id = a.container_id, error = %e, "rules of its network may be left in the nat table: `iptables -t nat -S | grep CONTAINER_ID` names them");
        }
        // The rules against the host's loopback on what went with it.
        if let Some(result) = a.result.as_ref().or(a.so_far.as_ref()) {
            let forgotten = self.lock_localnet().and_then(|_lock| super::localnet::forget(result, &list));
            if let Err(e) = forgotten {
                tracing::warn!(workload = %workload, error = %e, "a rule against the host's loopback is left in the raw table");
            }
        }
        netns::remove(&a.netns);
        let _ = std::fs::remove_dir_all(self.etc_dir(workload));
        let _ = std::fs::remove_file(self.record_path(workload));
        Ok(())
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
        let (text, left_out) = dns::resolv_conf(a.result.as_ref());
        for value in left_out {
            tracing::warn!(workload = %workload, %value, "left out of /etc/resolv.conf: the network's DNS settings name what is not one word, not an address, or a nameserver past the third (which resolvers never read)");
        }
        write(&resolv, &text)?;
        Ok((hosts, resolv))
    }
}

/// Removes the nat table's rules commented with `container_id` (as the
/// CNI plugins comment theirs: `name: "NET" id: "ID"`), and the chains of
/// its own they jump to or live in (`CNI-...`, not the plugins' shared
/// ones). Nothing when there are none.
fn remove_commented_nat_rules(container_id: &str) -> Result<(), String> {
    let run = |program: &str, args: &[&str], input: &str| -> Result<String, String> {
        let out = super::localnet::xtables(program, args, input).map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let rules = run("iptables", &["-w", "10", "-t", "nat", "-S"], "")?;
    let restore = commented_rules_undone(&rules, container_id);
    if restore.is_empty() {
        return Ok(());
    }
    let input = format!("*nat\n{}COMMIT\n", restore.concat());
    run("iptables-restore", &["-w", "10", "--noflush"], &input).map(|_| ())
}

/// The iptables-restore lines that undo `rules`' (the nat table's `-S`)
/// rules commented with `container_id` and the chains of its own.
fn commented_rules_undone(rules: &str, container_id: &str) -> Vec<String> {
    const SHARED: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"];
    let marker = format!("id: \\\"{container_id}\\\"");
    let commented: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A ") && l.contains(&marker)).collect();
    let own = |chain: &str| chain.starts_with("CNI-") && !SHARED.contains(&chain);
    let mut chains: Vec<&str> = commented
        .iter()
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let target = words.iter().position(|w| *w == "-j").and_then(|i| words.get(i + 1).copied());
            [words.get(1).copied(), target]
        })
        .flatten()
        .filter(|c| own(c))
        .collect();
    chains.sort_unstable();
    chains.dedup();
    // The rules elsewhere (a built-in chain's jump) go one by one; the
    // chains of its own are flushed and removed whole.
    let outside = commented.iter().filter(|l| l.split_whitespace().nth(1).is_none_or(|c| !chains.contains(&c)));
    let mut lines: Vec<String> = outside.map(|l| format!("-D {}\n", &l[3..])).collect();
    lines.extend(chains.iter().map(|c| format!("-F {c}\n")));
    lines.extend(chains.iter().map(|c| format!("-X {c}\n")));
    lines
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

/// Whether one of `addresses` (CIDRs, as a CNI result gives them) is of
/// `ip`'s family.
fn has_family(addresses: &[String], ip: std::net::IpAddr) -> bool {
    addresses
        .iter()
        .filter_map(|cidr| cidr.split('/').next()?.parse::<std::net::IpAddr>().ok())
        .any(|a| a.is_ipv6() == ip.is_ipv6())
}

/// Whether a process on this host already has `port`: a TCP socket
/// listening on it, or an unconnected UDP socket bound to it, on its
/// address or on every address (from the calling thread's network
/// namespace's tables: /proc/net is the main thread's, which joins a
/// workload's namespace for a moment when it clones without the zygote). Binding it to find out would also trip on other sockets that
/// merely use the port (an outgoing connection's, or one in TIME_WAIT).
pub fn in_use(port: &PortMapping) -> bool {
    use crate::model::Protocol;
    let (tables, state) = match port.protocol {
        Protocol::Tcp => (["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"], "0A"),
        Protocol::Udp => (["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"], "07"),
        Protocol::Sctp => return sctp_in_use(port),
    };
    tables.iter().filter_map(|t| std::fs::read_to_string(t).ok()).any(|table| {
        table.lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some((address, number)) = f.get(1).and_then(|l| l.split_once(':')) else { return false };
            f.get(3) == Some(&state)
                && u16::from_str_radix(number, 16) == Ok(port.host_port)
                && proc_address(address).is_some_and(|a| {
                    a.is_unspecified() || port.host_ip.is_none_or(|want| want.is_unspecified() || want == a)
                })
        })
    })
}

/// Whether an SCTP endpoint on this host is bound to `port`, on its
/// address or on every address (/proc/net/sctp/eps, there once the sctp
/// module is loaded; without it no socket can hold the port). Its lines:
/// ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS..., the port in decimal
/// and the addresses as text.
fn sctp_in_use(port: &PortMapping) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/thread-self/net/sctp/eps") else { return false };
    sctp_table_has(&table, port)
}

fn sctp_table_has(table: &str, port: &PortMapping) -> bool {
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.get(5).and_then(|p| p.parse::<u16>().ok()) == Some(port.host_port)
            && f.iter().skip(8).filter_map(|a| a.parse::<std::net::IpAddr>().ok()).any(|a| {
                let a = a.to_canonical();
                a.is_unspecified() || port.host_ip.is_none_or(|want| want.is_unspecified() || want == a)
            })
    })
}

/// An address as /proc/net prints it: the raw bytes in 32-bit words, each
/// word in hex in the host's byte order.
fn proc_address(hex: &str) -> Option<std::net::IpAddr> {
    let mut bytes = Vec::with_capacity(16);
    for i in (0..hex.len()).step_by(8) {
        let word = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?).to_canonical()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_read_as_proc_net_prints_them() {
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(proc_address("0100007F"), ip("127.0.0.1"));
        assert_eq!(proc_address("00000000"), ip("0.0.0.0"));
        assert_eq!(proc_address("00000000000000000000000001000000"), ip("::1"));
        // An IPv4-mapped address is the IPv4 address.
        assert_eq!(proc_address("0000000000000000FFFF00000100007F"), ip("127.0.0.1"));
        assert_eq!(proc_address("0100007"), None);
    }

    use super::*;

    /// To the daemon, a manifest on a network whose definition is refused
    /// is valid only while it fits the attachment its workload has: an
    /// edit that needs a new one is refused (the running version runs
    /// on), and so is a workload that has none. `check` only warns.
    #[test]
    fn on_a_refused_network_only_a_manifest_that_fits_its_attachment_is_valid_to_the_daemon() {
        use crate::validate::{HostChecks, RefusedNetworks, Validator};
        let why = "/etc/paddock/networks/lan.conflist:2:11: not valid JSON";
        let config = serde_json::json!({"cniVersion": "1.0.0", "name": "lan", "plugins": [{"type": "bridge"}]});
        let text = "command = [\"x\"]\nports = [\"8080:80\"]\n[namespaces]\nnetwork = \"lan\"\n";
        let w = WorkloadName::try_from("w").unwrap();
        let validator = Validator::new(Vec::new()).with_networks(vec!["bridge".into()], vec!["bridge".into()]);
        let m = validator.validate("w.toml", text, HostChecks::Skip).spec.expect("valid").manifest;
        let attachment = Attachment {
            network: "lan".into(),
            fingerprint: settings(&w, &m, "lan", &config.to_string()),
            config,
            container_id: "paddock-w".into(),
            ifname: "eth0".into(),
            netns: "/run/paddock/netns/w".into(),
            ports: m.ports.clone(),
            result: Some(serde_json::json!({})),
            so_far: None,
            hosts: None,
            resolv_conf: None,
            undoing: false,
        };
        let refused =
            RefusedNetworks { by_name: vec![("lan".into(), why.into())], all: None, kept: vec![(w, attachment)] };
        let validator = validator.with_refused_networks(refused);
        let errors = |file: &str, text: &str, mode| -> Vec<String> {
            validator.validate(file, text, mode).problems.iter().map(|p| format!("{p:?}")).collect()
        };
        assert_eq!(errors("w.toml", text, HostChecks::Require), Vec::<String>::new(), "it fits: valid");
        let other_command = text.replace("[\"x\"]", "[\"y\"]");
        assert!(
            errors("w.toml", &other_command, HostChecks::Require).is_empty(),
            "a new command fits the same attachment"
        );
        for changed in [text.replace("8080:80", "8081:80"), format!("hostname = \"elsewhere\"\n{text}")] {
            let checked = validator.validate("w.toml", &changed, HostChecks::Require);
            assert!(checked.spec.is_none(), "{changed}");
            let [problem] = &checked.problems[..] else { panic!("{:?}", checked.problems) };
            assert!(problem.is_error() && problem.message.contains(why), "{problem:?}");
            assert!(problem.help.as_deref().is_some_and(|h| h.contains("undo that change")), "{problem:?}");
        }
        let checked = validator.validate("v.toml", text, HostChecks::Require);
        assert!(checked.spec.is_none(), "another workload has no attachment to keep");
        assert!(checked.problems[0].help.as_deref().is_some_and(|h| h.contains("cannot be made until")));
        let checked = validator.validate("v.toml", text, HostChecks::Warn);
        assert!(checked.spec.is_some() && !checked.problems[0].is_error(), "`check` warns");
    }

    /// To the daemon, a manifest whose new attachment would find a plugin
    /// missing is invalid, at its network; a plugin installed since is
    /// found at the next validation, not only at the daemon's start. One
    /// that fits the attachment its workload has needs no plugin.
    #[test]
    fn a_missing_plugin_is_looked_for_at_each_validation_and_only_for_a_new_attachment() {
        use crate::validate::{HostChecks, Validator, line_col};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (networks_dir, plugins, state) =
            (dir.path().join("networks"), dir.path().join("plugins"), dir.path().join("state"));
        for d in [&networks_dir, &plugins, &state] {
            std::fs::create_dir(d).unwrap();
        }
        let list = json!({"cniVersion": "1.0.0", "name": "lan", "plugins": [{"type": "nosuchplugin"}]});
        std::fs::write(networks_dir.join("lan.conflist"), list.to_string()).unwrap();
        let config = crate::config::NetworkConfig {
            networks_dir,
            plugin_dirs: vec![plugins.clone()],
            ..crate::config::NetworkConfig::default()
        };
        let networks = Networks::load(&config, &state, &dir.path().join("run")).unwrap();
        let validator = Validator::new(Vec::new())
            .with_networks(networks.names(), networks.publishing())
            .with_attachments(networks.clone());
        let text = "command = [\"x\"]\n[namespaces]\nnetwork = \"lan\"\n";
        let checked = validator.validate("w.toml", text, HostChecks::Require);
        let [problem] = &checked.problems[..] else { panic!("{:?}", checked.problems) };
        assert!(
            problem.is_error() && problem.message.contains("the CNI plugin `nosuchplugin` is not in"),
            "{problem:?}"
        );
        assert_eq!(line_col(text, problem.span.clone().unwrap().start), (3, 11));
        assert!(validator.validate("w.toml", text, HostChecks::Skip).spec.is_some());

        let program = plugins.join("nosuchplugin");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let checked = validator.validate("w.toml", text, HostChecks::Require);
        assert!(checked.spec.is_some() && checked.problems.is_empty(), "installed: {:?}", checked.problems);

        // Gone again, while w has an attachment (any network namespace stands for its own).
        std::fs::remove_file(&program).unwrap();
        let w = WorkloadName::try_from("w").unwrap();
        let m = validator.validate("w.toml", text, HostChecks::Skip).spec.unwrap().manifest;
        let attachment = Attachment {
            network: "lan".into(),
            config: networks.get("lan").unwrap().raw.clone(),
            container_id: "paddock-w".into(),
            ifname: "eth0".into(),
            netns: "/proc/self/ns/net".into(),
            ports: Vec::new(),
            fingerprint: networks.fingerprint(&w, &m).unwrap(),
            result: Some(json!({})),
            so_far: None,
            hosts: None,
            resolv_conf: None,
            undoing: false,
        };
        std::fs::create_dir(state.join("networks")).unwrap();
        networks.record(&w, &attachment).unwrap();
        assert!(validator.validate("w.toml", text, HostChecks::Require).problems.is_empty(), "it fits: valid");
        assert!(validator.validate_started("w.toml", &format!("hostname = \"other\"\n{text}")).problems.is_empty());
        let other = validator.validate("w.toml", &format!("hostname = \"other\"\n{text}"), HostChecks::Require);
        assert!(other.spec.is_none(), "another hostname needs a new attachment");
        networks.record(&w, &Attachment { undoing: true, ..attachment }).unwrap();
        assert!(validator.validate("w.toml", text, HostChecks::Require).spec.is_none(), "one being undone is not kept");
    }

    #[test]
    fn an_sctp_endpoint_on_the_port_is_seen_on_its_address_or_every_address() {
        let table = "ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
                     ffff8a 00000000 2   10  5    3868      0 12345 10.0.0.5 192.168.1.2\n\
                     ffff8b 00000000 2   10  6    9899      0 12346 ::\n";
        let port = |s: &str| s.parse::<PortMapping>().unwrap();
        assert!(sctp_table_has(table, &port("3868:3868/sctp")));
        assert!(sctp_table_has(table, &port("192.168.1.2:3868:1/sctp")));
        assert!(!sctp_table_has(table, &port("127.0.0.1:3868:1/sctp")), "another address is free");
        assert!(sctp_table_has(table, &port("127.0.0.1:9899:1/sctp")), "bound to every address");
        assert!(!sctp_table_has(table, &port("3869:1/sctp")));
    }

    #[test]
    fn the_nat_rules_commented_with_a_container_id_and_its_chains_are_undone() {
        let rules = "-P POSTROUTING ACCEPT\n\
            -N CNI-HOSTPORT-MASQ\n\
            -N CNI-aa\n\
            -N CNI-bb\n\
            -A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n\
            -A POSTROUTING -s 10.77.0.2/32 -m comment --comment \"name: \\\"bridge\\\" id: \\\"paddock-w-1\\\"\" -j CNI-aa\n\
            -A POSTROUTING -s 10.77.0.3/32 -m comment --comment \"name: \\\"bridge\\\" id: \\\"paddock-w-12\\\"\" -j CNI-bb\n\
            -A CNI-aa -d 10.77.0.0/16 -m comment --comment \"name: \\\"bridge\\\" id: \\\"paddock-w-1\\\"\" -j ACCEPT\n\
            -A CNI-bb -d 10.77.0.0/16 -m comment --comment \"name: \\\"bridge\\\" id: \\\"paddock-w-12\\\"\" -j ACCEPT\n";
        assert_eq!(
            commented_rules_undone(rules, "paddock-w-1"),
            [
                "-D POSTROUTING -s 10.77.0.2/32 -m comment --comment \"name: \\\"bridge\\\" id: \\\"paddock-w-1\\\"\" -j CNI-aa\n",
                "-F CNI-aa\n",
                "-X CNI-aa\n"
            ]
        );
        assert!(commented_rules_undone(rules, "paddock-w-9").is_empty());
    }

    #[test]
    fn a_host_address_needs_an_address_of_its_family_in_the_result() {
        let given = ["10.77.0.5/16".to_owned()];
        assert!(has_family(&given, "127.0.0.1".parse().unwrap()));
        assert!(!has_family(&given, "::1".parse().unwrap()));
        assert!(has_family(&["fd00::5/64".to_owned()], "::1".parse().unwrap()));
    }

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
            so_far: None,
            hosts: Some("/run/paddock/etc/web/hosts".into()),
            resolv_conf: Some("/run/paddock/etc/web/resolv.conf".into()),
            undoing: false,
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
