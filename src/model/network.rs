//! A workload's network: which namespace it gets (`namespaces.network`)
//! and the ports it publishes on the host (`ports`, the `docker run -p`
//! syntax).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The name of paddock's built-in CNI network: a host bridge with outbound
/// NAT and published ports.
pub const BRIDGE: &str = "bridge";

/// `namespaces.network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Network {
    /// A network namespace with only loopback: reachable from nowhere.
    #[default]
    Private,
    /// The host's network namespace.
    Host,
    /// A network namespace of its own attached to a CNI network, by name:
    /// `bridge` is paddock's built-in one; any other names a conflist in
    /// the daemon's networks directory.
    Cni(String),
}

impl Network {
    /// The CNI network it is attached to, if any.
    pub fn cni(&self) -> Option<&str> {
        match self {
            Network::Cni(name) => Some(name),
            _ => None,
        }
    }

    /// Whether the sandbox has a network namespace of its own.
    pub fn is_own(&self) -> bool {
        !matches!(self, Network::Host)
    }
}

/// A CNI network's name, as the CNI specification allows it.
pub fn is_network_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(crate) const NETWORK_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a network: use \"private\", \"host\", \"bridge\" or the name of a CNI network")]
pub struct NetworkError(String);

impl FromStr for Network {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "private" => Ok(Network::Private),
            "host" => Ok(Network::Host),
            name if is_network_name(name) => Ok(Network::Cni(name.to_owned())),
            other => Err(NetworkError(other.to_owned())),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Private => f.write_str("private"),
            Network::Host => f.write_str("host"),
            Network::Cni(name) => f.write_str(name),
        }
    }
}

serde_as_string!(Network);

impl JsonSchema for Network {
    fn schema_name() -> Cow<'static, str> {
        "Network".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "\"private\" (the default without `ports`): a network namespace with only loopback. \"bridge\" (the default with `ports`): a namespace of its own on paddock's host bridge, with an address, outbound NAT and the published `ports`. \"host\": the host's network. Any other name: the CNI network of that name in the daemon's networks directory.",
            "anyOf": [
                { "enum": ["private", "bridge", "host"] },
                { "pattern": NETWORK_NAME_PATTERN }
            ]
        })
    }
}

/// A port's transport protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// One published port: connections to `host_port` on the host (on
/// `host_ip` only, when given) reach `container_port` in the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "PortSpelling")]
pub struct PortMapping {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// Whether two mappings want the same port of the host: same port and
    /// protocol, on addresses that overlap (no address means all of them).
    pub fn collides_with(&self, other: &PortMapping) -> bool {
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
                _ => true,
            }
    }
}

impl fmt::Display for PortMapping {
    /// The short syntax, always with the protocol: `127.0.0.1:8080:80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(f, "{}:{}/{}", self.host_port, self.container_port, self.protocol)
    }
}

/// Why a port cannot be published as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error(
        "`{0}` gives no host port: paddock publishes on a fixed port, as in \"8080:80\" (host port 8080 to the workload's port 80)"
    )]
    NoHostPort(String),
    #[error("`{0}` is a port range: ranges are not supported; list each port")]
    Range(String),
    #[error("`{port}` in `{spec}` is not a port: ports are 1 to 65535")]
    BadPort { spec: String, port: String },
    #[error(
        "`{address}` in `{spec}` is not an IP address: write one, as 127.0.0.1 or [::1] (a host name is not looked up)"
    )]
    BadAddress { spec: String, address: String },
    #[error(
        "host_ip `{0}` is not an IP address: write one, as \"127.0.0.1\" or \"::1\" (a host name is not looked up)"
    )]
    BadHostIp(String),
    #[error("`{protocol}` in `{spec}` is not a protocol: use tcp (the default), udp or sctp")]
    BadProtocol { spec: String, protocol: String },
    #[error(
        "`{0}` is not a published port: write HOST_PORT:PORT, HOST_IP:HOST_PORT:PORT, each with /udp or /sctp if not tcp"
    )]
    Syntax(String),
}

fn port(spec: &str, s: &str) -> Result<u16, PortError> {
    if s.contains('-') {
        return Err(PortError::Range(spec.to_owned()));
    }
    match s.parse::<u16>() {
        Ok(p) if p > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(PortError::BadPort { spec: spec.to_owned(), port: s.to_owned() }),
    }
}

impl FromStr for PortMapping {
    type Err = PortError;
    /// `HOST_PORT:PORT`, `HOST_IP:HOST_PORT:PORT` or `[IPV6]:HOST_PORT:PORT`,
    /// each optionally followed by `/tcp`, `/udp` or `/sctp`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((ports, p)) => {
                let protocol = match p {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "sctp" => Protocol::Sctp,
                    other => {
                        return Err(PortError::BadProtocol { spec: spec.to_owned(), protocol: other.to_owned() });
                    }
                };
                (ports, protocol)
            }
            None => (spec, Protocol::Tcp),
        };
        // An IPv6 address is bracketed: its colons are not separators.
        let (host_ip, rest) = match ports.strip_prefix('[') {
            Some(v6) => {
                let (address, rest) = v6.split_once("]:").ok_or_else(|| PortError::Syntax(spec.to_owned()))?;
                (Some(address), rest)
            }
            None => match ports.matches(':').count() {
                0 => return Err(PortError::NoHostPort(spec.to_owned())),
                1 => (None, ports),
                2 => {
                    let (address, rest) = ports.split_once(':').expect("two colons");
                    (Some(address), rest)
                }
                _ => return Err(PortError::Syntax(spec.to_owned())),
            },
        };
        // An IPv4-mapped IPv6 address is the IPv4 address (as portmap reads
        // it): one spelling, so two mappings of one port are seen to collide.
        let host_ip = host_ip
            .map(|a| {
                a.parse::<IpAddr>()
                    .map(|ip| ip.to_canonical())
                    .map_err(|_| PortError::BadAddress { spec: spec.to_owned(), address: a.into() })
            })
            .transpose()?;
        let (host, container) = rest.split_once(':').ok_or_else(|| PortError::Syntax(spec.to_owned()))?;
        if host.is_empty() {
            return Err(PortError::NoHostPort(spec.to_owned()));
        }
        Ok(PortMapping { host_ip, host_port: port(spec, host)?, container_port: port(spec, container)?, protocol })
    }
}

/// How a port may be written in a manifest: the short string, or a table.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortSpelling {
    Short(String),
    Long(LongPort),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongPort {
    /// Parsed in `try_from`: a bad one said as such (an untagged enum's
    /// error says only that no spelling matched).
    host_ip: Option<String>,
    host_port: u16,
    container_port: u16,
    #[serde(default)]
    protocol: Protocol,
}

impl TryFrom<PortSpelling> for PortMapping {
    type Error = PortError;
    fn try_from(spelling: PortSpelling) -> Result<Self, PortError> {
        match spelling {
            PortSpelling::Short(s) => s.parse(),
            PortSpelling::Long(l) => {
                for p in [l.host_port, l.container_port] {
                    if p == 0 {
                        return Err(PortError::BadPort { spec: "0".into(), port: "0".into() });
                    }
                }
                let host_ip = l
                    .host_ip
                    .map(|a| {
                        a.parse::<IpAddr>()
                            .map(|ip| ip.to_canonical())
                            .map_err(|_| PortError::BadHostIp(super::name::quoted(&a)))
                    })
                    .transpose()?;
                Ok(PortMapping {
                    host_ip,
                    host_port: l.host_port,
                    container_port: l.container_port,
                    protocol: l.protocol,
                })
            }
        }
    }
}

impl JsonSchema for PortMapping {
    fn schema_name() -> Cow<'static, str> {
        "PortMapping".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let protocol = generator.subschema_for::<Protocol>();
        json_schema!({
            "description": "A published port: \"HOST_PORT:PORT\" (e.g. \"8080:80\"), \"HOST_IP:HOST_PORT:PORT\" (e.g. \"127.0.0.1:8080:80\", \"[::1]:8080:80\"), each with \"/udp\" or \"/sctp\" when not TCP; or a table { host_port, container_port, host_ip, protocol }.",
            "anyOf": [
                { "type": "string", "minLength": 1, "maxLength": 64 },
                {
                    "type": "object",
                    "properties": {
                        "host_ip": { "type": "string", "description": "Only this host address (default: all)." },
                        "host_port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                        "container_port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                        "protocol": protocol
                    },
                    "required": ["host_port", "container_port"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortMapping {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_docker_run_p_spellings_parse() {
        assert_eq!(
            p("8080:80"),
            PortMapping { host_ip: None, host_port: 8080, container_port: 80, protocol: Protocol::Tcp }
        );
        let dns = p("127.0.0.1:5353:53/udp");
        assert_eq!((dns.host_ip, dns.host_port, dns.container_port), (Some("127.0.0.1".parse().unwrap()), 5353, 53));
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(p("[::1]:8080:80").host_ip, Some("::1".parse().unwrap()));
        assert_eq!(p("1:65535/sctp").protocol, Protocol::Sctp);
        // An IPv4-mapped IPv6 address is its IPv4 address: it collides with it.
        assert_eq!(p("[::ffff:127.0.0.1]:8080:80").host_ip, Some("127.0.0.1".parse().unwrap()));
        assert!(p("[::ffff:127.0.0.1]:8080:80").collides_with(&p("127.0.0.1:8080:80")));
        assert!(p("[::ffff:0.0.0.0]:8080:80").collides_with(&p("10.0.0.1:8080:80")));
        for s in ["127.0.0.1:5353:53/udp", "[::1]:8080:80/tcp", "8080:80/tcp"] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn what_cannot_be_published_says_why() {
        let e = |s: &str| s.parse::<PortMapping>().unwrap_err().to_string();
        assert!(e("80").contains("gives no host port"), "{}", e("80"));
        assert!(e("127.0.0.1::80").contains("gives no host port"));
        assert!(e("8000-8010:8000-8010").contains("ranges are not supported"));
        assert!(e("0:80").contains("`0` in `0:80` is not a port"));
        assert!(e("8080:70000").contains("not a port"));
        assert!(e("8080:+80").contains("not a port"));
        assert!(e("300.1.1.1:80:80").contains("not an IP address"));
        assert!(e("8080:80/http").contains("not a protocol"));
        assert!(e("a:b:c:d").contains("is not a published port"));
        assert!(e("localhost:8080:80").ends_with("(a host name is not looked up)"), "{}", e("localhost:8080:80"));
    }

    /// A table's bad `host_ip` is said as such, not as "data did not match
    /// any variant of untagged enum PortSpelling" (the schema lets any
    /// string through).
    #[test]
    fn a_tables_host_ip_that_is_no_address_says_so() {
        #[derive(Deserialize)]
        struct Ports {
            #[allow(dead_code)]
            ports: Vec<PortMapping>,
        }
        let table = |ip: &str| {
            let text = format!("ports = [{{ host_port = 8080, container_port = 80, host_ip = {ip:?} }}]");
            toml::from_str::<Ports>(&text).map(|p| p.ports[0]).map_err(|e| e.message().to_owned())
        };
        assert_eq!(
            table("localhost").unwrap_err(),
            "host_ip `localhost` is not an IP address: write one, as \"127.0.0.1\" or \"::1\" (a host name is not looked up)"
        );
        assert_eq!(table("::ffff:127.0.0.1").unwrap(), p("127.0.0.1:8080:80"), "canonical, as the short form");
        // The schema bounds no string here: what is quoted of one is.
        let long = table(&"x".repeat(100_000)).unwrap_err();
        assert!(long.len() < 300 && long.contains(&format!("{}...`", "x".repeat(63))), "{} bytes", long.len());
    }

    #[test]
    fn collisions_need_the_same_port_protocol_and_an_overlapping_address() {
        let c = |a: &str, b: &str| p(a).collides_with(&p(b));
        assert!(c("8080:80", "8080:81"));
        assert!(c("8080:80", "127.0.0.1:8080:80"));
        assert!(c("0.0.0.0:8080:80", "127.0.0.1:8080:80"));
        assert!(!c("127.0.0.1:8080:80", "127.0.0.2:8080:80"));
        assert!(!c("8080:80", "8080:80/udp"));
        assert!(!c("8080:80", "8081:80"));
    }

    #[test]
    fn networks_are_private_host_or_a_cni_name() {
        assert_eq!("private".parse::<Network>().unwrap(), Network::Private);
        assert_eq!("host".parse::<Network>().unwrap(), Network::Host);
        assert_eq!("bridge".parse::<Network>().unwrap(), Network::Cni("bridge".into()));
        assert_eq!("lan-2".parse::<Network>().unwrap().cni(), Some("lan-2"));
        assert!("".parse::<Network>().is_err());
        assert!("a/b".parse::<Network>().is_err());
    }
}
