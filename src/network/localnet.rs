//! What portmap's `route_localnet` would open, closed again.
//!
//! portmap (with `snat`, as the built-in network has it) turns
//! `net.ipv4.conf.IF.route_localnet` on for the host interface that leads
//! to the workload (the bridge), so that the host's own connections to
//! `localhost:PORT` reach a published port. The kernel then also takes a
//! packet addressed to 127.0.0.0/8 that *arrives* on that interface as the
//! host's own: any process of a workload on the bridge, with no capability
//! (a socket bound to eth0 by SO_BINDTODEVICE), reaches what listens on the
//! host's loopback alone (CVE-2020-8558's kind; portmap adds no rule
//! against it, containernetworking/plugins#729). After each ADD, each host
//! interface the workload is reached through that has `route_localnet` on
//! gets a rule in the raw table that drops what arrives on it for
//! 127.0.0.0/8, as kube-proxy drops it. The raw table sees a packet before
//! connection tracking undoes a NAT, so the replies to the host's own
//! connections to a published port (addressed to the bridge's address on
//! the wire) pass. The rule stays, as portmap's setting and its shared
//! chains do.

use std::net::Ipv4Addr;
use std::process::Command;

use serde_json::Value;

const LOOPBACK: &str = "127.0.0.0/8";
const COMMENT: &str = "paddock: nothing arriving here reaches the host's loopback (route_localnet)";

/// The host interfaces a result's workload is reached through: those it
/// names outside the workload's namespace (a bridge, a veth's host end),
/// and those the host routes the workload's IPv4 addresses through (a
/// macvlan's parent, for one).
fn host_interfaces(result: &Value) -> Vec<String> {
    let mut names = named_outside(result);
    // This thread's namespace, as the sysctls and iptables below see it.
    let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
    for address in super::cni::addresses(result) {
        let ip = address.split('/').next().and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        if let Some(dev) = ip.and_then(|ip| route_of(&routes, ip)) {
            names.push(dev);
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The interfaces a result names outside the workload's namespace.
fn named_outside(result: &Value) -> Vec<String> {
    result
        .get("interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|i| i.get("sandbox").and_then(Value::as_str).is_none_or(str::is_empty))
        .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The interface of the longest prefix of /proc/net/route's text that
/// holds `ip` (its addresses and masks are hexadecimal, in the host's order).
fn route_of(routes: &str, ip: Ipv4Addr) -> Option<String> {
    let ip = u32::from_ne_bytes(ip.octets());
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| fields.get(i).and_then(|f| u32::from_str_radix(f, 16).ok());
            let (dest, mask) = (hex(1)?, hex(7)?);
            (ip & mask == dest & mask).then(|| (mask.count_ones(), fields[0].to_owned()))
        })
        .max_by_key(|(prefix, _)| *prefix)
        .map(|(_, dev)| dev)
}

/// Whether packets for 127.0.0.0/8 arriving on `ifname` are taken.
fn routes_localnet(ifname: &str) -> bool {
    let on = |conf: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{conf}/route_localnet")).is_ok_and(|v| v.trim() == "1")
    };
    !ifname.contains('/') && !ifname.starts_with('.') && ifname != "lo" && (on(ifname) || on("all"))
}

/// `verb` (-C, -I, -D) of the rule that drops what arrives on `ifname` for the loopback.
fn iptables(verb: &str, ifname: &str) -> std::io::Result<std::process::Output> {
    let rule = ["-w", "10", "-t", "raw", verb, "PREROUTING", "-i", ifname, "-d", LOOPBACK];
    xtables("iptables", &[&rule[..], &["-m", "comment", "--comment", COMMENT, "-j", "DROP"]].concat(), "")
}

/// Runs `program` (iptables, iptables-restore) with `args` and `input` on
/// its stdin, with nothing of the daemon's environment but the PATH the
/// plugins are given (directories only root may write).
pub(super) fn xtables(program: &str, args: &[&str], input: &str) -> std::io::Result<std::process::Output> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .env_clear()
        .env("PATH", super::cni::plugins_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    child.wait_with_output()
}

/// Drops what arrives for the host's loopback on each interface `result`'s
/// workload is reached through that `route_localnet` opened; the rule is
/// added once. An error says which interface, and iptables' words.
pub fn guard(result: &Value) -> Result<(), String> {
    host_interfaces(result).into_iter().filter(|i| routes_localnet(i)).try_for_each(|i| drop_on(&i))
}

/// The same before the plugins run, for the bridges `list` names (the
/// `bridge` plugin's, `cni0` by default), whether or not route_localnet
/// is on yet: the ADD that turns it on for a bridge leaves no moment in
/// which the workloads already on it reach the host's loopback.
pub fn guard_bridges(list: &super::cni::ConfList) -> Result<(), String> {
    bridges(list).into_iter().try_for_each(drop_on)
}

/// The bridges `list`'s `bridge` plugins name (`cni0` by default).
fn bridges(list: &super::cni::ConfList) -> Vec<&str> {
    list.plugins
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
        .map(|p| p.get("bridge").and_then(Value::as_str).unwrap_or("cni0"))
        .filter(|name| !name.is_empty() && !name.contains('/') && *name != "lo")
        .collect()
}

/// The interfaces of this thread's network namespace, or None when
/// they cannot be read.
fn interfaces_here() -> Option<Vec<String>> {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    Some(dev.lines().skip(2).filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned())).collect())
}

/// Once an attachment on `list` is undone: the rules `guard` added for
/// the host interfaces its `result` names that went with it (a veth's host
/// end, which has route_localnet on when `all` has it, as kube-proxy sets
/// it) are removed, or each attachment ever made would leave one behind,
/// naming an interface long gone. The bridges `list` names, which outlive
/// their attachments, and any interface still there keep theirs.
pub fn forget(result: &Value, list: &super::cni::ConfList) -> Result<(), String> {
    let Some(here) = interfaces_here() else { return Ok(()) };
    let bridges = bridges(list);
    let gone = named_outside(result).into_iter().filter(|name| {
        !name.is_empty()
            && !name.contains('/')
            && !name.starts_with('.')
            && name != "lo"
            && !bridges.contains(&name.as_str())
            && !here.contains(name)
    });
    for ifname in gone {
        let failed = |e: &dyn std::fmt::Display| {
            format!(
                "the rule against the host's loopback on {ifname}, which is gone, cannot be removed: iptables -t raw: {e}"
            )
        };
        // One copy at a time (a daemon older than the lock could add two).
        for _ in 0..16 {
            if !iptables("-C", &ifname).map_err(|e| failed(&e))?.status.success() {
                break;
            }
            let deleted = iptables("-D", &ifname).map_err(|e| failed(&e))?;
            if !deleted.status.success() {
                return Err(failed(&String::from_utf8_lossy(&deleted.stderr).trim()));
            }
        }
    }
    Ok(())
}

fn drop_on(ifname: &str) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| {
        format!(
            "{ifname} takes packets for the host's loopback (route_localnet, which portmap turns on), \
             and the rule that drops those from the workloads cannot be added: iptables -t raw: {e}"
        )
    };
    let checked = iptables("-C", ifname).map_err(|e| failed(&e))?;
    if checked.status.success() {
        return Ok(());
    }
    let added = iptables("-I", ifname).map_err(|e| failed(&e))?;
    if !added.status.success() {
        return Err(failed(&String::from_utf8_lossy(&added.stderr).trim()));
    }
    tracing::info!(interface = %ifname, "dropping packets for 127.0.0.0/8 that arrive on it (route_localnet is or may be on for it)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_to_an_address_is_the_longest_prefix_that_holds_it() {
        // 10.77.0.0/16 on paddock0, a default route by eth0 (little-endian hex, as x86's /proc shows it).
        let hex = |ip: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(ip));
        let routes = format!(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t{}\t{}\t0003\t0\t0\t0\t{}\t0\t0\t0\n\
             paddock0\t{}\t{}\t0001\t0\t0\t0\t{}\t0\t0\t0\n",
            hex([0, 0, 0, 0]),
            hex([192, 0, 2, 1]),
            hex([0, 0, 0, 0]),
            hex([10, 77, 0, 0]),
            hex([0, 0, 0, 0]),
            hex([255, 255, 0, 0]),
        );
        assert_eq!(route_of(&routes, Ipv4Addr::new(10, 77, 0, 5)).as_deref(), Some("paddock0"));
        assert_eq!(route_of(&routes, Ipv4Addr::new(8, 8, 8, 8)).as_deref(), Some("eth0"));
        assert_eq!(route_of("Iface\n", Ipv4Addr::new(8, 8, 8, 8)), None);
    }

    #[test]
    fn the_interfaces_named_outside_the_workload_are_the_hosts() {
        let result = serde_json::json!({"interfaces": [
            {"name": "paddock0", "mac": "aa"},
            {"name": "veth1234", "mac": "bb"},
            {"name": "eth0", "mac": "cc", "sandbox": "/run/paddock/netns/w"},
        ]});
        let names = host_interfaces(&result);
        assert!(names.contains(&"paddock0".to_owned()) && names.contains(&"veth1234".to_owned()), "{names:?}");
        assert!(!names.contains(&"eth0".to_owned()), "{names:?}");
    }
}
