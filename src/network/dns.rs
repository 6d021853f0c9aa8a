//! The `/etc/hosts` and `/etc/resolv.conf` a networked workload gets.

use std::net::IpAddr;

use serde_json::Value;

/// Names the workload's hostname with its addresses, and localhost.
pub fn hosts(hostname: &str, addresses: &[String]) -> String {
    let mut text = String::from(
        "# Written by paddock for this workload.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    for address in addresses {
        text.push_str(&format!("{address}\t{hostname}\n"));
    }
    text
}

/// The resolvers a sandbox can reach: the host's `/etc/resolv.conf`, but
/// when it points at a stub on the host's loopback (systemd-resolved's
/// 127.0.0.53), which a workload's namespace cannot reach, the upstream
/// servers the stub uses instead, as Podman does. What the network's CNI
/// result says in its `dns` (a conflist's `dns`, which the bridge plugin
/// returns) replaces the host's lines of each kind it names. Returns the
/// file, and the network's values it could not write (said, not dropped
/// in silence).
pub fn resolv_conf(result: Option<&Value>) -> (String, Vec<String>) {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = || std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    let (network, left_out) = Settings::of(result);
    (with_network(from_host(&host, upstream), &network), left_out)
}

/// The nameservers a resolver reads (MAXNS in glibc's and musl's resolv.h).
const MAX_NAMESERVERS: usize = 3;

/// A CNI result's `dns`: each field the spec gives it.
#[derive(Debug, Default, PartialEq)]
struct Settings {
    nameservers: Vec<IpAddr>,
    domain: Option<String>,
    search: Vec<String>,
    options: Vec<String>,
}

/// One word of resolv.conf.
fn word(v: &Value) -> Option<&str> {
    v.as_str().filter(|w| !w.is_empty() && !w.chars().any(|c| c.is_whitespace() || c.is_control()))
}

impl Settings {
    /// The settings, and what was left out: a value that is not one word
    /// of resolv.conf, a nameserver that is not an address, or one past
    /// the third.
    fn of(result: Option<&Value>) -> (Self, Vec<String>) {
        let dns = result.and_then(|r| r.get("dns"));
        let mut left_out = Vec::new();
        if let Some(other) = result.and_then(|r| r.get("dns")).filter(|d| !d.is_object()) {
            left_out.push(format!("dns: {other}"));
        }
        let mut words = |key: &str, valid: fn(&str) -> bool| -> Vec<String> {
            let value = dns.and_then(|d| d.get(key));
            if let Some(other) = value.filter(|v| !v.is_array()) {
                left_out.push(format!("{key}: {other}"));
            }
            let list = value.and_then(Value::as_array);
            let (kept, bad): (Vec<&Value>, _) = list.into_iter().flatten().partition(|v| word(v).is_some_and(valid));
            left_out.extend(bad.into_iter().map(|v| format!("{key}: {v}")));
            kept.into_iter().filter_map(word).map(str::to_owned).collect()
        };
        let any = |_: &str| true;
        let nameservers = words("nameservers", |a| a.parse::<IpAddr>().is_ok());
        let (search, options) = (words("search", any), words("options", any));
        let domain = dns.and_then(|d| d.get("domain"));
        if let Some(bad) = domain.filter(|d| word(d).is_none()) {
            left_out.push(format!("domain: {bad}"));
        }
        let mut nameservers: Vec<IpAddr> = nameservers.iter().filter_map(|a| a.parse().ok()).collect();
        // glibc's and musl's resolvers read the first MAXNS (3) and ignore the rest.
        for past in nameservers.split_off(nameservers.len().min(MAX_NAMESERVERS)) {
            left_out.push(format!("nameservers: \"{past}\" (past the third: resolvers read {MAX_NAMESERVERS})"));
        }
        let settings = Settings { nameservers, domain: domain.and_then(word).map(str::to_owned), search, options };
        (settings, left_out)
    }
}

/// `text` (resolv.conf lines) with the lines of each kind `network` names
/// replaced by its.
fn with_network(text: String, network: &Settings) -> String {
    if *network == Settings::default() {
        return text;
    }
    let replaced = |line: &str| {
        let kind = line.split_whitespace().next().unwrap_or_default();
        (kind == "nameserver" && !network.nameservers.is_empty())
            || (kind == "domain" && network.domain.is_some())
            || (kind == "search" && !network.search.is_empty())
            || (kind == "options" && !network.options.is_empty())
    };
    let mut out: String = text.lines().filter(|l| !replaced(l)).flat_map(|l| [l, "\n"]).collect::<Vec<_>>().concat();
    out.push_str("# From the network's DNS settings:\n");
    for server in &network.nameservers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if let Some(domain) = &network.domain {
        out.push_str(&format!("domain {domain}\n"));
    }
    for (kind, words) in [("search", &network.search), ("options", &network.options)] {
        if !words.is_empty() {
            out.push_str(&format!("{kind} {}\n", words.join(" ")));
        }
    }
    out
}

fn is_loopback_server(line: &str) -> bool {
    line.split_whitespace().nth(1).and_then(|a| a.parse::<IpAddr>().ok()).is_some_and(|a| a.is_loopback())
}

fn servers(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| l.starts_with("nameserver"))
}

fn from_host(host: &str, upstream: impl FnOnce() -> Option<String>) -> String {
    let stubbed = servers(host).any(is_loopback_server);
    let source = match stubbed.then(upstream).flatten() {
        Some(upstream) if servers(&upstream).any(|l| !is_loopback_server(l)) => upstream,
        _ => host.to_owned(),
    };
    let mut text = String::from("# Written by paddock from the host's resolver configuration.\n");
    let mut dropped = false;
    for line in source.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') || trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("nameserver") && is_loopback_server(trimmed) {
            dropped = true;
            continue;
        }
        text.push_str(trimmed);
        text.push('\n');
    }
    if dropped {
        text.push_str("# The host's loopback resolvers were left out: a workload cannot reach them.\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_file_names_the_workload() {
        let h = hosts("web", &["10.77.0.5".into()]);
        assert!(h.contains("127.0.0.1\tlocalhost\n") && h.ends_with("10.77.0.5\tweb\n"), "{h}");
    }

    #[test]
    fn a_plain_host_resolv_conf_is_kept() {
        let r = from_host("# comment\nnameserver 192.0.2.53\nsearch example.org\noptions ndots:2\n", || None);
        assert!(r.contains("nameserver 192.0.2.53\nsearch example.org\noptions ndots:2\n"), "{r}");
    }

    #[test]
    fn the_networks_dns_replaces_the_host_lines_of_each_kind_it_names() {
        let host = from_host("nameserver 192.0.2.53\nsearch example.org\noptions ndots:2\n", || None);
        let result = serde_json::json!({"dns": {
            "nameservers": ["198.51.100.1", "2001:db8::53", "not an address"],
            "search": ["corp.example", "two words", "lab.example"],
        }});
        let (network, left_out) = Settings::of(Some(&result));
        assert_eq!(left_out, ["nameservers: \"not an address\"", "search: \"two words\""]);
        let r = with_network(host.clone(), &network);
        assert!(!r.contains("192.0.2.53") && !r.contains("example.org"), "the host's are replaced: {r}");
        assert!(r.contains("options ndots:2\n"), "what the network does not name is the host's: {r}");
        assert!(
            r.ends_with("nameserver 198.51.100.1\nnameserver 2001:db8::53\nsearch corp.example lab.example\n"),
            "{r}"
        );
        // A result with no `dns`, or an empty one, changes nothing.
        for result in [serde_json::json!({"ips": []}), serde_json::json!({"dns": {}})] {
            assert_eq!(with_network(host.clone(), &Settings::of(Some(&result)).0), host);
        }
        assert_eq!(with_network(host.clone(), &Settings::of(None).0), host);
        // Not a list where the spec says one: left out, and said.
        let result = serde_json::json!({"dns": {"nameservers": "198.51.100.1", "search": ["lab.example"]}});
        let (network, left_out) = Settings::of(Some(&result));
        assert_eq!(left_out, ["nameservers: \"198.51.100.1\""]);
        assert!(network.nameservers.is_empty() && network.search == ["lab.example"]);
        assert_eq!(Settings::of(Some(&serde_json::json!({"dns": "8.8.8.8"}))).1, ["dns: \"8.8.8.8\""]);
        // A fourth nameserver no resolver reads: left out, and said.
        let four = serde_json::json!({"dns": {"nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]}});
        let (network, left_out) = Settings::of(Some(&four));
        assert_eq!(network.nameservers.len(), 3);
        assert_eq!(left_out, ["nameservers: \"192.0.2.4\" (past the third: resolvers read 3)"]);
        let result = serde_json::json!({"dns": {"domain": "corp.example", "options": ["ndots:5", "edns0"]}});
        let r = with_network(host, &Settings::of(Some(&result)).0);
        assert!(r.contains("nameserver 192.0.2.53\nsearch example.org\n"), "{r}");
        assert!(r.ends_with("domain corp.example\noptions ndots:5 edns0\n") && !r.contains("ndots:2"), "{r}");
    }

    #[test]
    fn a_loopback_stub_is_replaced_by_its_upstream_servers() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstream = "nameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch lan\n";
        let r = from_host(stub, || Some(upstream.to_owned()));
        assert!(r.contains("nameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch lan\n"), "{r}");
        assert!(!r.contains("127.0.0.53"));
        // No upstream known: the stub is left out, and the file says so.
        let r = from_host(stub, || None);
        assert!(!r.contains("nameserver"), "no server is better than one the workload cannot reach: {r}");
        assert!(r.contains("search lan") && r.contains("left out"), "{r}");
    }
}
