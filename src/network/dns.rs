//! The `/etc/hosts` and `/etc/resolv.conf` a networked workload gets.

use std::net::IpAddr;

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
/// servers the stub uses instead, as Podman does.
pub fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = || std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    from_host(&host, upstream)
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
