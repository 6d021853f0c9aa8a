//! Networking through CNI, against the real plugins (Debian's
//! containernetworking-plugins), on a real daemon. Each test gives its
//! daemon a network namespace of its own as "the host" (its bridge,
//! addresses and firewall rules are made there) and sends traffic only
//! inside it: nothing of this machine's own network is touched.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::sandbox::busybox_rootfs;

/// Fails, saying what to install, when the plugins are missing.
fn require_plugins() {
    for plugin in ["bridge", "host-local", "portmap", "firewall"] {
        assert!(
            Path::new("/usr/lib/cni").join(plugin).exists(),
            "the CNI plugins are needed: apt-get install containernetworking-plugins iptables (.ci/run does)"
        );
    }
}

/// A daemon in a network namespace of its own, with a web root to serve.
fn daemon() -> Daemon {
    prepared().start(&[])
}

/// The same, not started yet.
fn prepared() -> Daemon {
    require_plugins();
    let d = Daemon::setup().with_own_network();
    // As systemd-tmpfiles makes /run/paddock: root's alone. The files a
    // network gives its workloads (/etc/hosts) are mounted from it all the
    // same, as paddock's own.
    std::fs::create_dir(d.path("run")).unwrap();
    std::fs::set_permissions(d.path("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::create_dir(d.path("www")).unwrap();
    std::fs::write(d.path("www/index.html"), "hello from paddock\n").unwrap();
    std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(d.path("www")).status().unwrap();
    d
}

/// An operator's network `name` in the daemon's networks directory: the
/// bridge plugin (bridge `NAME0`, gateway, host-local addresses from
/// `subnet` and a default route), then `more` plugins.
fn bridged_network(d: &Daemon, name: &str, subnet: &str, more: &[serde_json::Value]) {
    std::fs::create_dir_all(d.path("networks")).unwrap();
    let bridge = serde_json::json!({
        "type": "bridge",
        "bridge": format!("{name}0"),
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": d.path(&format!("{name}-ipam")).display().to_string(),
        },
    });
    let plugins: Vec<serde_json::Value> = std::iter::once(bridge).chain(more.iter().cloned()).collect();
    let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
    std::fs::write(d.path(&format!("networks/{name}.conflist")), conflist.to_string()).unwrap();
}

/// busybox httpd on `port`, serving the test's web root, with `extra` TOML.
fn web(d: &Daemon, port: u16, extra: &str) -> String {
    format!(
        "command = [\"/bin/httpd\", \"-f\", \"-p\", \"{port}\", \"-h\", \"/www\"]\nrootfs = {{ path = {:?} }}\n{extra}\n[[mounts]]\nsource = {:?}\ntarget = \"/www\"\n",
        busybox_rootfs().display().to_string(),
        d.path("www").display().to_string(),
    )
}

/// GET / from `addr`, on the daemon's host network; the body, or why not.
fn get(d: &Daemon, addr: SocketAddr) -> Result<String, String> {
    fetch(d, addr, "/")
}

fn fetch(d: &Daemon, addr: SocketAddr, path: &str) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    d.on_host(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        Ok(reply.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or(reply))
    })
}

/// GET until it answers (the server takes a moment to listen).
fn get_soon(d: &Daemon, addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(d, addr) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!(
                "{addr} never answered: {e}\n{}",
                std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn address(d: &Daemon, name: &str) -> String {
    d.wait_for(&format!("{name} to have an address"), |d| {
        d.workload(name).is_some_and(|w| w["addresses"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let w = d.workload(name).unwrap();
    let cidr = w["addresses"][0].as_str().unwrap().to_owned();
    cidr.split('/').next().unwrap().to_owned()
}

#[test]
fn a_published_port_is_reachable_on_the_host_on_the_workloads_address_and_from_outside() {
    let d = prepared();
    d.configure("policy_dir", "metrics_listen = \"9464\"\npolicy_dir");
    let d = d.start(&[]);
    let outside = Outside::new(&d);
    d.write("web.toml", &web(&d, 80, "ports = [\"8080:80\"]"));
    d.running_pid("web");
    let ip = address(&d, "web");
    assert!(ip.starts_with("10.77."), "{ip}");
    assert_eq!(get_soon(&d, format!("{ip}:80").parse().unwrap()), "hello from paddock\n");
    assert_eq!(get_soon(&d, "127.0.0.1:8080".parse().unwrap()), "hello from paddock\n");
    assert_eq!(get_soon(&d, "192.0.2.254:8080".parse().unwrap()), "hello from paddock\n");
    // From another host: a client in the outside namespace, through the
    // host's address on the link between them.
    let from_outside = outside.run(|| {
        let mut s = TcpStream::connect_timeout(&"192.0.2.254:8080".parse().unwrap(), Duration::from_secs(5)).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    assert!(from_outside.ends_with("\r\n\r\nhello from paddock\n"), "{from_outside}");
    let w = d.workload("web").unwrap();
    assert_eq!(w["network"], "bridge");
    assert_eq!(w["ports"], serde_json::json!(["8080:80/tcp"]));
    let table = d.paddock(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("{ip}  8080:80/tcp")), "{table}");
    let metrics = fetch(&d, "127.0.0.1:9464".parse().unwrap(), "/metrics").unwrap();
    assert!(metrics.contains("paddock_network_attachments{network=\"bridge\"} 1\n"), "{metrics}");
    assert!(metrics.contains("paddock_published_ports 1\n"), "{metrics}");
}

/// What the daemon's network left on its "host": veths, address
/// allocations, firewall rules that name paddock's or CNI's chains, and
/// namespace mounts. All zero once nothing is attached.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    veths: usize,
    allocations: usize,
    rules: Vec<String>,
    mounts: usize,
}

/// Whether a line of `iptables-save` belongs to one attachment: it names
/// a chain of its own (CNI-DN-..., CNI-<hash>) or an address of the
/// bridge's subnet. The plugins' shared scaffolding (FORWARD -> CNI-FORWARD
/// -> CNI-ADMIN, the CNI-HOSTPORT-* chains and their jumps) stays, as the
/// plugins mean it to, like Docker's DOCKER-USER chain.
fn per_attachment(line: &str) -> bool {
    const SHARED: [&str; 5] =
        ["CNI-FORWARD", "CNI-ADMIN", "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"];
    let own_chain = line
        .split(|c: char| c.is_whitespace() || c == ':' || c == '"')
        .any(|word| word.starts_with("CNI-") && !SHARED.contains(&word));
    (line.starts_with("-A") || line.starts_with(':')) && (own_chain || line.contains(" 10.77."))
}

fn leftovers(d: &Daemon) -> Leftovers {
    let out = d.host_command("ip", &["-o", "link", "show", "type", "veth"]);
    let veths = String::from_utf8_lossy(&out.stdout).lines().count();
    let ipam = d.path("state/networks/ipam/bridge");
    let allocations = std::fs::read_dir(&ipam)
        .map(|e| {
            e.flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok()))
                .count()
        })
        .unwrap_or(0);
    let rules = ["iptables-save", "ip6tables-save"]
        .iter()
        .flat_map(|tool| {
            let out = d.host_command(tool, &[]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| per_attachment(l))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let run = d.path("run").display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&run)).count();
    Leftovers { veths, allocations, rules, mounts }
}

/// Waits until nothing is left; fails naming what is.
fn nothing_left_soon(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while leftovers(d) != NOTHING {
        assert!(
            Instant::now() < deadline,
            "left: {:?}\n{}",
            leftovers(d),
            std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const NOTHING: Leftovers = Leftovers { veths: 0, allocations: 0, rules: Vec::new(), mounts: 0 };

/// A port a host service listens on is not published over it (portmap's
/// rules would take it over, for the host's own connections too, as they
/// would paddock's own metrics port): the file is invalid at the port,
/// saying why, and is validated again at each full rescan (here a
/// reload) until the port is free. A start that finds it taken all the
/// same (the service took it after the file was validated) fails, and is
/// tried again with backoff.
#[test]
fn a_port_a_host_service_has_is_not_taken_over() {
    let d = daemon();
    let service = d.on_host(|| std::net::TcpListener::bind("127.0.0.1:8096").unwrap());
    d.write("taker.toml", &sleeper("ports = [\"8096:80\"]"));
    d.wait_for("taker refused, saying why", |d| {
        d.workload("taker").is_some_and(|w| w.to_string().contains("host port 8096:80/tcp is in use on this host"))
    });
    let w = d.workload("taker").unwrap();
    assert!(w["error"].as_str().unwrap().contains("taker.toml:3:10: error: host port 8096:80/tcp"), "{w}");
    assert_ne!(w["state"], "running");
    drop(service);
    assert!(d.paddock(&["reload"]).status.success());
    let pid = d.running_pid("taker");

    // Taken while it was stopped: its start fails, and is tried again.
    assert!(d.paddock(&["stop", "taker"]).status.success());
    d.wait_for("taker stopped", |d| d.workload("taker").is_some_and(|w| w["pid"].is_null()));
    let service = d.on_host(|| std::net::TcpListener::bind("127.0.0.1:8096").unwrap());
    assert!(d.paddock(&["start", "--no-block", "taker"]).status.success());
    d.wait_for("its start refused, saying why", |d| {
        d.workload("taker").is_some_and(|w| w["state"] == "backoff" && w.to_string().contains("8096:80/tcp is in use"))
    });
    drop(service);
    d.wait_for("taker running again", |d| {
        d.workload("taker").is_some_and(|w| w["pid"].as_i64().is_some_and(|p| p != pid))
    });
}

/// An edit to a port a host service has would stop the running version
/// for a start that fails (and waits in backoff): the file is invalid at
/// the port, and the running version runs on. A port the workload's own
/// attachment publishes, which a host service took afterwards, is not
/// counted against its unchanged file: a daemon's restart adopts it and
/// finds its file valid.
#[test]
fn an_edit_to_a_port_a_host_service_has_keeps_the_running_version() {
    let mut d = daemon();
    d.write("web.toml", &sleeper("ports = [\"8098:80\"]"));
    let pid = d.running_pid("web");
    let service = d.on_host(|| std::net::TcpListener::bind("0.0.0.0:7070").unwrap());
    d.write("web.toml", &sleeper("ports = [\"7070:80\"]"));
    d.wait_for("the port refused at its line", |d| {
        d.workload("web").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("7070:80/tcp is in use")))
    });
    let w = d.workload("web").unwrap();
    assert!(w["error"].as_str().unwrap().contains("web.toml:3:10: error: host port 7070:80/tcp is in use"), "{w}");
    assert_eq!((w["state"].as_str(), w["pid"].as_i64()), (Some("running"), Some(pid)), "{w}");
    drop(service);

    // Its own port, taken by a host service since: not a reason to stop it.
    d.write("web.toml", &sleeper("ports = [\"8098:80\"]"));
    d.wait_for("the edit undone", |d| d.workload("web").is_some_and(|w| w["error"].is_null()));
    let taker = d.on_host(|| std::net::TcpListener::bind("0.0.0.0:8098").unwrap());
    d.kill();
    let d = d.start(&[]);
    d.wait_for("web adopted", |d| d.workload("web").is_some_and(|w| w["pid"].as_i64() == Some(pid)));
    std::thread::sleep(Duration::from_millis(300));
    let w = d.workload("web").unwrap();
    assert_eq!(
        (w["state"].as_str(), w["pid"].as_i64(), &w["error"]),
        (Some("running"), Some(pid), &serde_json::Value::Null),
        "{w}"
    );
    drop(taker);
}

/// An edit onto a network whose plugin this host has not: invalid at its
/// line (the running version runs on), and valid once the plugin is
/// installed, looked for again as the file is validated again (a reload),
/// not only as the daemon starts.
#[test]
fn an_edit_onto_a_network_whose_plugin_is_missing_keeps_the_running_version() {
    let d = prepared();
    fake_networks(&d, &[], &[("lan", &["nosuchplugin"])]);
    let d = d.start(&[]);
    d.write("app.toml", &sleeper(""));
    let pid = d.running_pid("app");
    d.write("app.toml", &sleeper("[namespaces]\nnetwork = \"lan\""));
    d.wait_for("the network refused at its line", |d| {
        d.workload("app").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("`nosuchplugin` is not in")))
    });
    let w = d.workload("app").unwrap();
    let said = "app.toml:4:11: error: on this host the workload would fail to start: the CNI plugin `nosuchplugin`";
    assert!(w["error"].as_str().unwrap().contains(said), "{w}");
    assert_eq!((w["state"].as_str(), w["pid"].as_i64()), (Some("running"), Some(pid)), "{w}");
    let (_, script) = sticky(&d.path("never"));
    std::fs::write(d.path("plugins/nosuchplugin"), script).unwrap();
    std::fs::set_permissions(d.path("plugins/nosuchplugin"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    assert!(d.paddock(&["reload"]).status.success());
    d.wait_for("the new version on lan", |d| {
        d.workload("app").is_some_and(|w| w["pid"].as_i64().is_some_and(|p| p != pid) && w["state"] == "running")
    });
}

fn sleeper(extra: &str) -> String {
    format!(
        "command = [\"/bin/sleep\", \"1000\"]\nrootfs = {{ path = {:?} }}\n{extra}\n",
        busybox_rootfs().display().to_string()
    )
}

/// A network beyond the daemon's host: a namespace of its own at
/// 192.0.2.1, wired to the host's 192.0.2.254 by a veth pair.
struct Outside {
    path: std::path::PathBuf,
}

impl Outside {
    fn new(d: &Daemon) -> Self {
        let path = d.path("outside");
        paddock::sandbox::netns::create(&path).unwrap();
        let ns = path.display().to_string();
        for args in [
            &["link", "add", "out0", "type", "veth", "peer", "name", "out1", "netns", &ns][..],
            &["addr", "add", "192.0.2.254/24", "dev", "out0"],
            &["link", "set", "out0", "up"],
        ] {
            let out = d.host_command("ip", args);
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        for args in [&["addr", "add", "192.0.2.1/24", "dev", "out1"][..], &["link", "set", "out1", "up"]] {
            let out =
                std::process::Command::new("nsenter").arg(format!("--net={ns}")).arg("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Outside { path }
    }

    fn listen(&self, port: u16) -> std::net::TcpListener {
        self.run(move || std::net::TcpListener::bind(("192.0.2.1", port)).unwrap())
    }

    /// Runs `f` on a thread in the outside namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        paddock::sandbox::netns::remove(&self.path);
    }
}

#[test]
fn a_workload_reaches_out_through_its_gateway_masqueraded() {
    let d = daemon();
    let outside = Outside::new(&d);
    let listener = outside.listen(9000);
    let command = "echo hello | nc 192.0.2.1 9000; sleep 1000";
    d.write(
        "client.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {command:?}]\nrootfs = {{ path = {:?} }}\n[namespaces]\nnetwork = \"bridge\"\n",
            busybox_rootfs().display().to_string()
        ),
    );
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut conn, from) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!(
                "no connection from the workload: {e}\n{}",
                std::fs::read_to_string(d.path("out/daemon.log")).unwrap()
            ),
        }
    };
    conn.set_nonblocking(false).unwrap();
    let mut said = String::new();
    conn.read_to_string(&mut said).unwrap();
    assert_eq!(said, "hello\n");
    assert_ne!(from.ip().to_string(), address(&d, "client"));
    assert_eq!(from.ip().to_string(), "192.0.2.254", "masqueraded behind the host's address");
}

#[test]
fn two_workloads_on_the_bridge_reach_each_other_and_its_name_resolves_to_itself() {
    let d = daemon();
    d.write("server.toml", &web(&d, 80, "[namespaces]\nnetwork = \"bridge\""));
    let ip = address(&d, "server");
    let command = format!("wget -q -O - http://{ip}/ > /www/fetched; hostname -i > /www/me; sleep 1000");
    let client = format!(
        "command = [\"/bin/sh\", \"-c\", {command:?}]\nrootfs = {{ path = {:?} }}\nhostname = \"buddy\"\n[namespaces]\nnetwork = \"bridge\"\n[[mounts]]\nsource = {:?}\ntarget = \"/www\"\nreadonly = false\n",
        busybox_rootfs().display().to_string(),
        d.path("www").display().to_string()
    );
    std::fs::set_permissions(d.path("www"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    d.write("client.toml", &client);
    d.wait_for("the client's fetch", |d| {
        std::fs::read_to_string(d.path("www/fetched")).is_ok_and(|s| s == "hello from paddock\n")
    });
    d.wait_for("the client's own address", |d| std::fs::read_to_string(d.path("www/me")).is_ok_and(|s| !s.is_empty()));
    assert_eq!(std::fs::read_to_string(d.path("www/me")).unwrap().trim(), address(&d, "client"));
}

#[test]
fn a_crashing_workload_restarts_with_its_address_and_ports() {
    let d = daemon();
    let crashy = format!(
        "command = [\"/bin/sh\", \"-c\", \"httpd -p 80 -h /www; sleep 1; exit 3\"]\nrootfs = {{ path = {:?} }}\nports = [\"8081:80\"]\n[restart]\nbackoff = \"0s\"\n[[mounts]]\nsource = {:?}\ntarget = \"/www\"\n",
        busybox_rootfs().display().to_string(),
        d.path("www").display().to_string(),
    );
    d.write("crashy.toml", &crashy);
    let first = address(&d, "crashy");
    d.wait_for("two restarts", |d| d.workload("crashy").is_some_and(|w| w["restarts"].as_u64() >= Some(2)));
    assert_eq!(address(&d, "crashy"), first, "the address stays across restarts");
    assert_eq!(get_soon(&d, "127.0.0.1:8081".parse().unwrap()), "hello from paddock\n");
    // One attachment throughout: the log says it was made once.
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert_eq!(log.matches("network attached").count(), 1, "{log}");
}

#[test]
fn removal_a_stopped_daemon_and_a_killed_one_leave_nothing_behind() {
    let mut d = daemon();
    assert_eq!(leftovers(&d), NOTHING, "a fresh host");
    d.write("a.toml", &sleeper("ports = [\"8082:80\"]"));
    d.write("b.toml", &sleeper("ports = [\"8083:80\"]"));
    address(&d, "a");
    address(&d, "b");
    let with_two = leftovers(&d);
    assert_eq!((with_two.veths, with_two.allocations, with_two.mounts), (2, 2, 2), "{with_two:?}");
    assert!(!with_two.rules.is_empty(), "{with_two:?}");
    // Removed: its network goes, the other's stays.
    std::fs::remove_file(d.path("wl/a.toml")).unwrap();
    d.wait_for("a's network to go", |d| leftovers(d).veths == 1);
    d.wait_for("a's allocation to go", |d| leftovers(d).allocations == 1 && leftovers(d).mounts == 1);
    // Killed with -9 and a manifest removed meanwhile: the next daemon undoes it.
    d.kill();
    std::fs::remove_file(d.path("wl/b.toml")).unwrap();
    d = d.start(&[]);
    nothing_left_soon(&d);
    // A workload that runs when the daemon stops: its network goes with it.
    d.write("c.toml", &sleeper("ports = [\"8084:80\"]"));
    address(&d, "c");
    assert_eq!(d.terminate(), 0);
    assert_eq!(leftovers(&d), NOTHING);
}

/// An edit that takes a workload off its network (`network = "private"`)
/// undoes the attachment it had, as an edit of its ports does: its
/// namespace, veth, address and published ports' rules stayed while it ran
/// on in its private namespace, and status went on showing the old
/// network, address and ports.
#[test]
fn an_edit_to_the_private_network_undoes_the_attachment_it_had() {
    let d = daemon();
    d.write("web.toml", &web(&d, 80, "ports = [\"8094:80\"]"));
    let pid = d.running_pid("web");
    assert_eq!(get_soon(&d, "127.0.0.1:8094".parse().unwrap()), "hello from paddock\n");
    d.write("web.toml", &web(&d, 80, "[namespaces]\nnetwork = \"private\""));
    d.wait_for("the new version", |d| {
        d.workload("web").is_some_and(|w| w["state"] == "running" && w["pid"].as_i64().is_some_and(|p| p != pid))
    });
    nothing_left_soon(&d);
    let w = d.workload("web").unwrap();
    assert!(w["network"].is_null() && w["addresses"].is_null() && w["ports"].is_null(), "{w}");
}

#[test]
fn a_daemon_in_a_mount_namespace_of_its_own_warns_that_its_networks_die_with_it() {
    let mut d = prepared();
    d.own_mounts = true;
    let mut d = d.start(&[]);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("mount namespace other than its parent's"), "{log}");
    assert!(log.contains("ProtectKernelModules="), "names the unit options: {log}");
    assert_eq!(d.terminate(), 0);
    // The same daemon in the test's own mount namespace says nothing of it.
    let mut d = daemon();
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(!log.contains("mount namespace"), "{log}");
    assert_eq!(d.terminate(), 0);
}

/// A daemon in a mount namespace of its own, killed: its network
/// namespaces' mounts went with it, their mount points left as plain
/// files. The next daemon adopts the workload, and undoes its attachment
/// without them when it restarts (a DEL given a file that is no namespace
/// failed, and every start of the workload with it, for ever); nothing is
/// left, the masquerade rules the bridge plugin could not find included.
#[test]
fn attachments_whose_namespace_mounts_went_with_a_killed_daemon_are_undone() {
    let mut d = prepared();
    d.own_mounts = true;
    let mut d = d.start(&[]);
    d.write("a.toml", &sleeper("ports = [\"8086:80\"]"));
    let before = address(&d, "a");
    let first = d.running_pid("a");
    d.kill();
    d = d.start(&[]);
    assert_eq!(d.running_pid("a"), first, "adopted");
    // Restarted: its old attachment is undone first.
    let restart = d.paddock(&["restart", "a"]);
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    d.wait_for("a started again", |d| {
        d.workload("a").is_some_and(|w| w["state"] == "running" && w["pid"].as_i64() != Some(first))
    });
    assert!(!address(&d, "a").is_empty(), "{before}");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(!log.contains("unknown FS magic"), "{log}");
    let said = log.lines().find(|l| l.contains("its network namespace is gone")).unwrap_or_else(|| panic!("{log}"));
    let id =
        said.split("container_id=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().trim_matches('"');
    assert_eq!(d.terminate(), 0);
    // All undone, the masquerade the bridge plugin finds only by the
    // namespace's addresses too (by the container id it is commented with).
    assert!(!id.is_empty(), "{said}");
    assert_eq!(leftovers(&d), NOTHING);
}

/// A daemon killed with -9 while the bridge plugin's DEL runs kills the
/// plugin with it (as it should): here, the plugin had removed the
/// workload's interface and not yet its masquerade rules, which it finds
/// by that interface's addresses. The next daemon's DEL finds no
/// addresses; the rules (commented with the attachment's container id,
/// whose addresses its record keeps) must go all the same. (A soak that
/// killed the daemon at random moments of a removal left them 2 times
/// in 25.)
#[test]
fn a_del_cut_by_a_killed_daemon_leaves_no_masquerade_rules() {
    let mut d = daemon();
    d.write("w.toml", &sleeper("ports = [\"8095:80\"]"));
    address(&d, "w");
    d.kill();
    // What the cut DEL had done: the workload's interface is gone.
    let netns = format!("--net={}", d.path("run/netns/w").display());
    let out = std::process::Command::new("nsenter").args([&netns, "ip", "link", "del", "eth0"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(d.path("wl/w.toml")).unwrap();
    let d = d.start(&[]);
    nothing_left_soon(&d);
}

#[test]
fn a_killed_daemon_adopts_the_workload_and_its_network() {
    let mut d = daemon();
    d.write("web.toml", &web(&d, 80, "ports = [\"8085:80\"]"));
    let pid = d.running_pid("web");
    let ip = address(&d, "web");
    d.kill();
    d = d.start(&[]);
    assert_eq!(d.running_pid("web"), pid, "adopted, not restarted");
    assert_eq!(address(&d, "web"), ip);
    assert_eq!(get_soon(&d, "127.0.0.1:8085".parse().unwrap()), "hello from paddock\n");
}

#[test]
fn a_host_port_published_twice_is_refused_naming_the_other_file() {
    let d = daemon();
    d.write("first.toml", &sleeper("ports = [\"8086:80\"]"));
    d.running_pid("first");
    d.write("second.toml", &sleeper("ports = [\"9999:99\", \"8086:81\"]"));
    d.wait_for("second refused", |d| d.workload("second").is_some_and(|w| w["state"] == "invalid"));
    let error = d.workload("second").unwrap()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("second.toml:3:21: error: host port 8086/tcp is already published by first.toml"),
        "{error}"
    );
    assert_eq!(d.workload("first").unwrap()["state"], "running");
    // `paddock check` on the directory: both files, each naming the other.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["check", "--no-host-checks"])
        .arg(d.path("wl"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let (first, second) =
        (d.path("wl/first.toml").display().to_string(), d.path("wl/second.toml").display().to_string());
    assert!(
        text.contains(&format!(
            "{first}:3:10: error: host port 8086/tcp is already published by {second} (8086:81/tcp)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{second}:3:21: error: host port 8086/tcp is already published by {first} (8086:80/tcp)"
        )),
        "{text}"
    );
    // The first removed: the second, validated again, takes the port at
    // once, not at the next full rescan (the test daemon's is 30 s away).
    std::fs::remove_file(d.path("wl/first.toml")).unwrap();
    let waited = std::time::Instant::now();
    d.running_pid("second");
    assert!(waited.elapsed() < Duration::from_secs(20), "{:?}", waited.elapsed());
}

#[test]
fn a_missing_plugin_is_refused_with_the_package_to_install() {
    require_plugins();
    let d = Daemon::setup().with_own_network();
    std::fs::create_dir(d.path("empty")).unwrap();
    d.configure("[network]\n", &format!("[network]\nplugin_dirs = [{:?}]\n", d.path("empty").display().to_string()));
    let d = d.start(&[]);
    d.write("web.toml", &sleeper("ports = [\"8087:80\"]"));
    // Its file is invalid, at the key that asks for the network.
    d.wait_for("the file refused", |d| d.workload("web").is_some_and(|w| w["error"].is_string()));
    let w = d.workload("web").unwrap();
    assert!(w["pid"].is_null(), "{w}");
    let error = w["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(
            "web.toml:3:9: error: on this host the workload would fail to start: the CNI plugin `bridge` is not in"
        ),
        "{error}"
    );
    assert!(error.contains("apt-get install containernetworking-plugins"), "{error}");
    assert_eq!(leftovers(&d), NOTHING);
}

#[test]
fn two_hundred_networked_workloads_start_and_go_leaving_nothing() {
    let d = daemon();
    // Ids for 200 slices.
    std::fs::write(d.path("subuid"), "paddock:1000000:20000000\n").unwrap();
    std::fs::write(d.path("subgid"), "paddock:1000000:20000000\n").unwrap();
    for i in 0..200 {
        d.write(&format!("n{i:03}.toml"), &sleeper("[namespaces]\nnetwork = \"bridge\""));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while d.status().iter().filter(|w| w["state"] == "running" && w["addresses"].is_array()).count() < 200 {
        assert!(
            Instant::now() < deadline,
            "not all 200 attached:\n{}",
            std::fs::read_to_string(d.path("out/daemon.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(leftovers(&d).veths, 200);
    for i in 0..200 {
        std::fs::remove_file(d.path(&format!("wl/n{i:03}.toml"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while leftovers(&d) != NOTHING {
        assert!(Instant::now() < deadline, "left: {:?}", leftovers(&d));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_workloads_root_cannot_change_its_interfaces_or_routes() {
    let d = daemon();
    std::fs::set_permissions(d.path("www"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let command = "ip link set eth0 down 2>/www/link.err; echo $? > /www/link; \
                   ip route del default 2>/www/route.err; echo $? > /www/route; httpd -f -p 80 -h /www";
    d.write(
        "web.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {command:?}]\nrootfs = {{ path = {:?} }}\nports = [\"8088:80\"]\n[[mounts]]\nsource = {:?}\ntarget = \"/www\"\nreadonly = false\n",
            busybox_rootfs().display().to_string(),
            d.path("www").display().to_string()
        ),
    );
    d.wait_for("both tries", |d| std::fs::read_to_string(d.path("www/route")).is_ok_and(|s| !s.is_empty()));
    for what in ["link", "route"] {
        let status = std::fs::read_to_string(d.path(&format!("www/{what}"))).unwrap();
        let error = std::fs::read_to_string(d.path(&format!("www/{what}.err"))).unwrap();
        assert_ne!(status.trim(), "0", "{what}: refused ({error})");
        assert!(error.contains("not permitted"), "{what}: {error}");
    }
    assert_eq!(get_soon(&d, "127.0.0.1:8088".parse().unwrap()), "hello from paddock\n", "and it still serves");
}

/// portmap turns `route_localnet` on for the bridge (the host's own
/// `localhost:PORT` reaches a published port through it), and with it
/// the kernel takes a packet for 127.0.0.0/8 that arrives on the bridge
/// as the host's own: a workload on the bridge, with no capability at
/// all, would reach what listens on the host's loopback alone (the kind
/// of CVE-2020-8558, which kube-proxy answers with a DROP rule). Its
/// datagram leaves by eth0 for the gateway (SO_BINDTODEVICE needs no
/// capability); what a service there does with one datagram, unanswered,
/// is enough (a syslog, a statsd, a DNS cache's update).
#[test]
fn a_workload_on_the_bridge_cannot_reach_the_hosts_loopback() {
    let d = prepared();
    std::fs::write(d.path("subuid"), "paddock:7208960:131072\n").unwrap();
    std::fs::write(d.path("subgid"), "paddock:7208960:131072\n").unwrap();
    let d = d.start(&[]);
    let probe = common::sandbox::probe(&d.path("probe"), "loopback");
    std::fs::set_permissions(d.path("www"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let service = d.on_host(|| std::net::UdpSocket::bind("127.0.0.1:9999").unwrap());
    service.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let command = "httpd -p 80 -h /www; \
                   while :; do /probe/loopback eth0 9999 from-the-workload >> /www/sent 2>&1; sleep 0.1; done";
    d.write(
        "web.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {command:?}]\nrootfs = {{ path = {:?} }}\nports = [\"8090:80\"]\n\
             [[mounts]]\nsource = {:?}\ntarget = \"/www\"\nreadonly = false\n\
             [[mounts]]\nsource = {:?}\ntarget = \"/probe\"\n",
            busybox_rootfs().display().to_string(),
            d.path("www").display().to_string(),
            probe.display().to_string(),
        ),
    );
    // Published on the host's loopback as before (route_localnet stays on for that).
    assert_eq!(get_soon(&d, "127.0.0.1:8090".parse().unwrap()), "hello from paddock\n");
    let localnet = d.on_host(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/paddock0/route_localnet").unwrap());
    assert_eq!(localnet.trim(), "1", "portmap turned route_localnet on for the bridge (else this test proves nothing)");
    d.wait_for("the workload to have sent 10 datagrams", |d| {
        std::fs::read_to_string(d.path("www/sent")).is_ok_and(|s| s.lines().filter(|l| *l == "sent").count() >= 10)
    });
    let mut got = [0u8; 64];
    let received = service.recv_from(&mut got).map(|(n, from)| (String::from_utf8_lossy(&got[..n]).into_owned(), from));
    assert!(
        received.is_err(),
        "a service on the host's 127.0.0.1 got {received:?} from the workload ({})",
        std::fs::read_to_string(d.path("www/sent")).unwrap().lines().next().unwrap_or_default()
    );
}

/// The raw table's rules against the host's loopback (`localnet`), as
/// `iptables -S` prints them.
fn loopback_rules(d: &Daemon) -> Vec<String> {
    let out = d.host_command("iptables", &["-t", "raw", "-S", "PREROUTING"]);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("127.0.0.0/8")).map(str::to_owned).collect()
}

/// Workloads that publish ports, started at one instant: the bridge's
/// rule against the host's loopback is added once (each attachment
/// looked for it, found none, and added its own).
#[test]
fn workloads_started_at_one_instant_add_the_bridges_loopback_rule_once() {
    let d = daemon();
    for i in 0..6 {
        d.write(&format!("w{i}.toml"), &sleeper(&format!("ports = [\"{}:80\"]", 8100 + i)));
    }
    for i in 0..6 {
        d.running_pid(&format!("w{i}"));
    }
    let rules = loopback_rules(&d);
    assert_eq!(rules.len(), 1, "{rules:#?}");
    assert!(rules[0].contains("-i paddock0"), "{rules:#?}");
}

/// With `route_localnet` on for every interface (kube-proxy sets
/// `net.ipv4.conf.all.route_localnet=1` on a node), each attachment's own
/// host interface (the veth's host end) gets a rule against the host's
/// loopback too; the rule goes with the interface, or each attachment
/// ever made left one in the raw table, naming an interface long gone.
#[test]
fn a_rule_against_the_hosts_loopback_goes_with_the_interface_it_names() {
    let d = prepared();
    // In the daemon's "host" namespace alone, not this machine's.
    let out = d.host_command("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = d.start(&[]);
    let mut pid = 0;
    for port in [8091, 8092, 8093] {
        d.write("web.toml", &sleeper(&format!("ports = [\"{port}:80\"]")));
        d.wait_for("the new version", |d| {
            d.workload("web").is_some_and(|w| w["state"] == "running" && w["pid"].as_i64().is_some_and(|p| p != pid))
        });
        pid = d.running_pid("web");
    }
    std::fs::remove_file(d.path("wl/web.toml")).unwrap();
    nothing_left_soon(&d);
    let rules = loopback_rules(&d);
    assert!(rules.len() == 1 && rules[0].contains("-i paddock0"), "{rules:#?}");
}

#[test]
fn a_port_on_an_address_family_the_network_does_not_give_fails_and_leaves_nothing() {
    let d = prepared();
    // An IPv4-only network of the operator's, with portmap: a port on an
    // IPv6 host address would be listed and not published.
    bridged_network(
        &d,
        "lan4",
        "10.98.0.0/24",
        &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
    );
    let d = d.start(&[]);
    d.write("six.toml", &sleeper("ports = [\"[::1]:8080:80\"]\n[namespaces]\nnetwork = \"lan4\""));
    d.wait_for("six to fail", |d| d.workload("six").is_some_and(|w| w["state"] == "failed"));
    let w = d.workload("six").unwrap();
    assert!(w["error"].as_str().unwrap().contains("gave the workload no IPv6 address"), "{w}");
    let left: Vec<_> = std::fs::read_dir(d.path("run/netns"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "its namespace was removed: {left:?}");
    assert!(!d.path("state/networks/six.json").exists(), "and its record");
}

#[test]
fn a_network_configuration_others_could_change_is_refused_and_the_daemon_runs_without_it() {
    // Whoever can write a .conflist chooses what the plugins, run as root, do.
    let d = Daemon::setup();
    std::fs::create_dir(d.path("networks")).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": "lan",
        "plugins": [{"type": "bridge", "bridge": "eth0", "ipam": {"type": "host-local", "subnet": "10.97.0.0/24"}}],
    });
    std::fs::write(d.path("networks/lan.conflist"), conflist.to_string()).unwrap();
    std::fs::set_permissions(d.path("networks/lan.conflist"), std::os::unix::fs::PermissionsExt::from_mode(0o664))
        .unwrap();
    let d = d.start(&[]);
    let risk = "lan.conflist is writable by its group (mode 0664): whoever can write it chooses what the CNI plugins paddock runs as root are told to do";
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("a network definition is refused") && log.contains(risk), "{log}");
    // A workload on it is not started, and says why; the others run.
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"lan\""));
    d.write("plain.toml", &sleeper(""));
    d.running_pid("plain");
    d.wait_for("w refused", |d| d.workload("w").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains(risk))));
    assert_ne!(d.workload("w").unwrap()["state"], "running");
}

/// A bad edit of a network's definition, read by the next daemon (here an
/// upgrade's), takes no network away: the workload on it runs on, and
/// restarts in the attachment it has; a new one cannot be made until the
/// definition is mended, and the error says which file and what to do.
#[test]
fn a_bad_edit_of_a_networks_definition_keeps_the_workloads_on_it_running_with_their_network() {
    let d = prepared();
    fake_networks(&d, &[sticky(&d.path("out/never"))], &[("fake", &["sticky"])]);
    let d = d.start(&[]);
    let on_fake = sleeper("[namespaces]\nnetwork = \"fake\"\n[restart]\npolicy = \"always\"\nbackoff = \"0s\"");
    d.write("w.toml", &on_fake);
    let pid = d.running_pid("w");
    let id = |d: &Daemon| -> serde_json::Value {
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path("state/networks/w.json")).unwrap()).unwrap();
        r["container_id"].clone()
    };
    let attached = id(&d);
    // Named as in /etc/cni/net.d, and no longer JSON: which network it
    // defines cannot be read.
    let good = std::fs::read_to_string(d.path("networks/fake.conflist")).unwrap();
    std::fs::remove_file(d.path("networks/fake.conflist")).unwrap();
    std::fs::write(d.path("networks/10-fake.conflist"), "{ \"cniVersion\": \"1.0.0\",\n  \"name\": }").unwrap();
    let out = d.paddock(&["upgrade"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("10-fake.conflist:2:11: not valid JSON"), "{log}");
    assert_eq!(d.running_pid("w"), pid, "adopted, running on");
    // Its workload dies: restarted in the attachment it has.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    d.wait_for("w restarted", |d| d.workload("w").is_some_and(|w| w["state"] == "running" && w["pid"] != pid));
    assert_eq!(id(&d), attached, "the same attachment");
    let pid = d.running_pid("w");
    // An edit that needs a new attachment (another hostname) is refused,
    // saying why, and the running version runs on; one that fits the
    // attachment it has restarts in it.
    // Whether `name`'s error says each of `parts`.
    let error_says = |d: &Daemon, name: &str, parts: &[&str]| {
        d.workload(name).is_some_and(|w| w["error"].as_str().is_some_and(|e| parts.iter().all(|p| e.contains(p))))
    };
    d.write("w.toml", &format!("hostname = \"elsewhere\"\n{on_fake}"));
    d.wait_for("the edit refused", |d| {
        let refused = "w.toml:5:11: error: the network `fake` is refused on this host";
        error_says(d, "w", &[refused, "10-fake.conflist:2:11", "undo that change"])
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(d.running_pid("w"), pid, "the running version runs on");
    d.write("w.toml", &format!("{on_fake}\n[env]\nEDITED = \"1\"\n"));
    d.wait_for("w restarted with the edit", |d| {
        d.workload("w").is_some_and(|w| w["state"] == "running" && w["pid"] != pid && w["error"].is_null())
    });
    assert_eq!(id(&d), attached, "the same attachment");
    // A workload that has none cannot get one, and is told why.
    d.write("new.toml", &on_fake);
    d.wait_for("new refused", |d| {
        error_says(
            d,
            "new",
            &["the network `fake` is refused on this host", "10-fake.conflist:2:11", "paddock upgrade"],
        )
    });
    // Mended and read again: it starts.
    std::fs::write(d.path("networks/10-fake.conflist"), good).unwrap();
    assert!(d.paddock(&["upgrade"]).status.success());
    assert!(d.paddock(&["restart", "new"]).status.success());
    d.running_pid("new");
    assert_eq!(id(&d), attached, "w's attachment still the same");
}

#[test]
fn a_network_from_the_networks_directory_is_used_by_name() {
    let d = prepared();
    bridged_network(&d, "lan", "10.99.0.0/24", &[]);
    let d = d.start(&[]);
    d.write("web.toml", &web(&d, 80, "[namespaces]\nnetwork = \"lan\""));
    let ip = address(&d, "web");
    assert!(ip.starts_with("10.99.0."), "{ip}");
    assert_eq!(d.workload("web").unwrap()["network"], "lan");
    assert_eq!(get_soon(&d, format!("{ip}:80").parse().unwrap()), "hello from paddock\n");
    // `paddock run` knows the same networks.
    std::fs::write(d.path("out/lan.toml"), sleeper("[namespaces]\nnetwork = \"lan\"")).unwrap();
    let run = paddock_run(&d, &[], &d.path("out/lan.toml"), &["--", "/bin/sh", "-c", "hostname -i"]).output().unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && said.trim().starts_with("10.99.0."),
        "{said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // A name that is no network is refused with the ones there are.
    d.write("typo.toml", &sleeper("[namespaces]\nnetwork = \"lna\""));
    d.wait_for("typo refused", |d| d.workload("typo").is_some_and(|w| w["state"] == "invalid"));
    let error = d.workload("typo").unwrap()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("lna") && error.contains("lan"), "{error}");
    // `lan` has no portmap: ports on it would never be published.
    d.write("ported.toml", &sleeper("ports = [\"8091:80\"]\n[namespaces]\nnetwork = \"lan\""));
    d.wait_for("ported refused", |d| d.workload("ported").is_some_and(|w| w["state"] == "invalid"));
    let error = d.workload("ported").unwrap()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("ported.toml:3:1:")
            && error.contains("network `lan` publishes no ports")
            && error.contains("portmap"),
        "{error}"
    );
    std::fs::remove_file(d.path("wl/web.toml")).unwrap();
    d.wait_for("the lan allocation to go", |d| {
        std::fs::read_dir(d.path("lan-ipam/lan"))
            .map(|e| e.flatten().all(|e| e.file_name().to_str().is_none_or(|n| n.parse::<std::net::IpAddr>().is_err())))
            .unwrap_or(true)
    });
}

/// A network's own DNS settings (its conflist's `dns`, which the bridge
/// plugin returns) are the workload's resolv.conf, in place of the host's.
#[test]
fn a_networks_dns_settings_are_the_workloads_resolvers() {
    let d = prepared();
    bridged_network(&d, "corp", "10.98.0.0/24", &[]);
    let path = d.path("networks/corp.conflist");
    let mut list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    list["plugins"][0]["dns"] = serde_json::json!({"nameservers": ["198.51.100.53"], "search": ["corp.example"]});
    std::fs::write(&path, list.to_string()).unwrap();
    let d = d.start(&[]);
    std::fs::write(d.path("out/corp.toml"), sleeper("[namespaces]\nnetwork = \"corp\"")).unwrap();
    let run = paddock_run(&d, &[], &d.path("out/corp.toml"), &["--", "/bin/cat", "/etc/resolv.conf"]).output().unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    let servers: Vec<&str> = said.lines().filter(|l| l.starts_with("nameserver")).collect();
    assert!(run.status.success(), "{said}{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(servers, ["nameserver 198.51.100.53"], "{said}");
    assert!(said.contains("\nsearch corp.example\n"), "{said}");
}

/// `-p` on a manifest that says `network = "private"` is refused at that
/// line, with nothing made: the bridge is `-p`'s network only where the
/// manifest names none. (It was put in place of the written one.)
#[test]
fn paddock_run_p_refuses_a_network_the_manifest_says_is_private() {
    let d = prepared();
    std::fs::write(d.path("out/private.toml"), sleeper("[namespaces]\nnetwork = \"private\"")).unwrap();
    let mut run = paddock_run(&d, &["-p", "8097:80"], &d.path("out/private.toml"), &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while run.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            run.kill().unwrap();
            run.wait().unwrap();
            panic!("started on the bridge in place of its private network");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(125), "{err}");
    let at = format!(
        "{}:4:11: error: `-p` publishes ports, and this network is private",
        d.path("out/private.toml").display()
    );
    assert!(err.contains(&at) && err.contains("nothing was started"), "{err}");
    assert_eq!(leftovers(&d), NOTHING);
}

#[test]
fn paddock_run_publishes_a_port_like_docker_run_p_and_undoes_it_at_the_end() {
    let d = prepared();
    d.write("web.toml", &web(&d, 80, ""));
    let mut run = paddock_run(&d, &["-p", "8090:80"], &d.path("wl/web.toml"), &[]).spawn().unwrap();
    assert_eq!(get_soon(&d, "127.0.0.1:8090".parse().unwrap()), "hello from paddock\n");
    assert_eq!(leftovers(&d).veths, 1);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(143), "the workload's SIGTERM, as 128+15");
    assert_eq!(leftovers(&d), NOTHING);
    assert!(std::fs::read_dir(d.path("state/networks/run")).is_ok_and(|mut e| e.next().is_none()), "no record left");
    // A run killed with -9 cannot undo its network; the next run does.
    let run_web = |port: &str| {
        paddock_run(&d, &["-p", port], &d.path("wl/web.toml"), &[])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut killed = run_web("8094:80");
    assert_eq!(get_soon(&d, "127.0.0.1:8094".parse().unwrap()), "hello from paddock\n");
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(leftovers(&d).veths, 1, "left by the killed run");
    // Its pid now another process's (a reuse, or after a reboot): the
    // record, named by pid and start time, is still a dead run's.
    let mut bystander = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let records = d.path("state/networks/run");
    let record = std::fs::read_dir(&records).unwrap().next().unwrap().unwrap().path();
    let name = record.file_name().unwrap().to_str().unwrap().to_owned();
    let (_, started) = name.strip_suffix(".json").unwrap().split_once('-').expect("run<PID>-<START>.json");
    std::fs::rename(&record, records.join(format!("run{}-{started}.json", bystander.id()))).unwrap();
    // A run killed between making its namespace and recording it left one
    // no record names.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    ended.wait().unwrap();
    let unrecorded = d.path(&format!("run/run/netns/run{}-1", ended.id()));
    paddock::sandbox::netns::create(&unrecorded).unwrap();
    let next = run_web("8095:80");
    assert_eq!(get_soon(&d, "127.0.0.1:8095".parse().unwrap()), "hello from paddock\n");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(next.id() as i32, libc::SIGTERM) };
    let out = next.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("undid the network of an earlier run that was killed"), "{said}");
    assert!(!unrecorded.exists(), "the unrecorded namespace of a run that is gone stays");
    // The killed run's sandbox died with it (die_with_parent): nothing is left.
    nothing_left_soon(&d);
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// The daemon's workloads and `paddock run`s never publish one host port
/// twice (portmap would send it to one of them): each refuses the port
/// the other holds, naming it. A run killed with -9 holds nothing, and
/// the daemon undoes what it left at its next rescan.
#[test]
fn a_port_the_daemon_or_a_run_publishes_is_refused_to_the_other() {
    let d = prepared();
    // No rescan meanwhile: what undoes the killed runs' networks below is
    // the start that wants a port, and the next daemon's start.
    d.configure("policy_dir", "resync_interval = \"1h\"\npolicy_dir");
    let mut d = d.start(&[]);
    d.write("web.toml", &web(&d, 80, "ports = [\"8097:80\"]"));
    d.running_pid("web");
    std::fs::write(d.path("out/other.toml"), sleeper("")).unwrap();
    let run = |port: &str| {
        let mut cmd = paddock_run(&d, &["-p", port], &d.path("out/other.toml"), &[]);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        cmd
    };
    let refused = run("8097:80").output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("host port 8097:80/tcp is published already by the workload web"), "{said}");
    // A run that holds a port: the daemon's workload that wants it waits.
    let mut holder = run("8098:80").spawn().unwrap();
    let records = d.path("state/networks/run");
    d.wait_for("the run's attachment", |_| std::fs::read_dir(&records).is_ok_and(|mut e| e.next().is_some()));
    d.write("taker.toml", &sleeper("ports = [\"8098:80\"]"));
    let pid = holder.id().to_string();
    d.wait_for("taker refused, naming the run", |d| {
        d.workload("taker").is_some_and(|w| {
            w["error"]
                .as_str()
                .is_some_and(|e| e.contains("published already by `paddock run` (pid ") && e.contains(&pid))
        })
    });
    assert_ne!(d.workload("taker").unwrap()["state"], "running");
    // Killed with -9, it holds nothing: the workload starts once what the
    // run left for its port is undone. Another killed run, on a port no
    // workload wants, is left to the daemon's next start.
    let mut bystander = run("8099:80").spawn().unwrap();
    // The records (not a write's temporary file), once each is complete.
    let complete = |_: &Daemon| {
        let records = std::fs::read_dir(&records).into_iter().flatten().flatten();
        records
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json") && !n.starts_with('.')))
            .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| !t.contains("\"result\": null")))
            .count()
    };
    let count = |_: &Daemon| std::fs::read_dir(&records).map_or(0, |e| e.count());
    d.wait_for("both runs' attachments", |d| complete(d) == 2);
    holder.kill().unwrap();
    holder.wait().unwrap();
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    d.running_pid("taker");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("which published a port this workload publishes"), "{log}");
    assert_eq!(count(&d), 1, "the bystander's is left");
    // And what a run killed while it wrote its record leaves: the write's
    // temporary file, whose writer is gone.
    std::fs::write(records.join(format!(".run1-2.json.{}.0.tmp", 1 << 23)), "{").unwrap();
    d.kill();
    let d = d.start(&[]);
    d.wait_for("the bystander's undone by the next daemon, and the temporary file removed", |d| count(d) == 0);
    // Said once it is done (the record is its last step; the line follows).
    let said = |d: &Daemon| std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default();
    d.wait_for("the undo said", |d| said(d).contains("undid the network of a `paddock run` that was killed run="));
}

/// Two `paddock run`s publishing one port, started at one instant: the
/// check that no one else publishes it and the record that says this one
/// does are made under one lock (the daemon's starts take it too), so one
/// runs and the other is refused, naming it.
#[test]
fn two_runs_started_at_one_instant_never_both_publish_one_port() {
    use std::os::unix::fs::DirBuilderExt;
    let d = prepared();
    std::fs::write(d.path("out/other.toml"), sleeper("")).unwrap();
    let run = || {
        paddock_run(&d, &["-p", "8093:80"], &d.path("out/other.toml"), &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The lock held by the test: neither run gets past the check, so both
    // are at it when it is released.
    let networks = d.path("state/networks");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&networks).unwrap();
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(networks.join("ports.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut runs = vec![run(), run()];
    std::thread::sleep(Duration::from_millis(500));
    let records = d.path("state/networks/run");
    let count = || std::fs::read_dir(&records).map_or(0, |e| e.count());
    assert_eq!(count(), 0, "nothing recorded while the lock is held");
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        if let Some(i) = runs.iter_mut().position(|r| r.try_wait().unwrap().is_some()) {
            break runs.remove(i);
        }
        assert!(std::time::Instant::now() < deadline, "neither run was refused");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut kept = runs.pop().unwrap();
    let out = refused.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    let holder = format!("host port 8093:80/tcp is published already by `paddock run` (pid {})", kept.id());
    assert!(said.contains(&holder), "{said}");
    assert_eq!(count(), 1, "the other's attachment");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(kept.id() as i32, libc::SIGTERM) };
    kept.wait().unwrap();
    assert_eq!(count(), 0, "undone at its end");
    // A holder that never lets go (a run stopped with Ctrl-Z): waited for
    // 10 s, then the start fails saying so.
    let file = std::fs::OpenOptions::new().write(true).open(networks.join("ports.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let begun = std::time::Instant::now();
    let out = run().wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("ports.lock is held by another start for 10 s"), "{said}");
    assert!(begun.elapsed() >= Duration::from_secs(10), "{:?}", begun.elapsed());
    drop(held);
}

#[test]
fn the_web_example_answers_curl_on_localhost_8080() {
    assert!(Path::new("/bin/busybox").exists(), "the example runs the host's busybox: apt-get install busybox-static");
    let d = daemon();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/workloads/web.toml")).unwrap();
    d.write("web.toml", &example);
    assert_eq!(get_soon(&d, "127.0.0.1:8080".parse().unwrap()), "hello from paddock\n");
    let doc = fetch(&d, "127.0.0.1:8080".parse().unwrap(), "/doc/").unwrap();
    assert!(!doc.is_empty(), "the host's /usr/share/doc is served too");
    let out = d.host_command("curl", &["-sS", "http://localhost:8080/"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from paddock\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resolv_conf_and_hosts_reach_a_writable_root_through_its_symlink_and_never_beyond_it() {
    let d = daemon();
    let root = d.path("root");
    let out = std::process::Command::new("cp").arg("-a").arg(busybox_rootfs()).arg(&root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::create_dir_all(root.join("run")).unwrap();
    // A writable root is the workload's own to change, not paddock's: the
    // mount point is made here, as a rootfs's owner would have.
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("run/resolv.conf"), "nameserver 192.0.2.99\n").unwrap();
    let _ = std::fs::remove_file(root.join("etc/resolv.conf"));
    // Absolute, as systemd-resolved's link is: inside the root it means
    // the root's /run, never the host's.
    std::os::unix::fs::symlink("/run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
    std::fs::set_permissions(d.path("www"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let command = "cat /etc/resolv.conf > /www/resolv; cat /etc/hosts > /www/hosts; sleep 1000";
    d.write(
        "named.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {command:?}]\n[rootfs]\npath = {:?}\nreadonly = false\n[namespaces]\nnetwork = \"bridge\"\n[[mounts]]\nsource = {:?}\ntarget = \"/www\"\nreadonly = false\n",
            root.display().to_string(),
            d.path("www").display().to_string()
        ),
    );
    let ip = address(&d, "named");
    d.wait_for("both files read", |d| std::fs::read_to_string(d.path("www/hosts")).is_ok_and(|s| !s.is_empty()));
    let resolv = std::fs::read_to_string(d.path("www/resolv")).unwrap();
    assert!(!resolv.contains("192.0.2.99"), "paddock's resolv.conf is mounted where the link leads: {resolv}");
    assert!(resolv.contains("nameserver"), "{resolv}");
    let hosts = std::fs::read_to_string(d.path("www/hosts")).unwrap();
    assert!(hosts.lines().any(|l| l.starts_with(&ip) && l.contains("named")), "{hosts}");
    assert_eq!(
        std::fs::read_to_string(root.join("run/resolv.conf")).unwrap(),
        "nameserver 192.0.2.99\n",
        "the rootfs's own file is untouched"
    );
}

#[test]
fn a_plugin_that_fails_once_is_tried_again_with_the_workloads_backoff() {
    use std::os::unix::fs::PermissionsExt;
    let d = prepared();
    // A plugin that fails its first ADD (as two portmaps racing to make
    // the host's shared chains once did), then passes the result on.
    std::fs::create_dir(d.path("plugins")).unwrap();
    let marker = d.path("out/flaked");
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\nif [ ! -e {m} ]; then touch {m}; echo '{{\"code\":11,\"msg\":\"try again\"}}'; exit 1; fi\n",
        m = marker.display()
    );
    std::fs::write(d.path("plugins/flaky"), script).unwrap();
    std::fs::set_permissions(d.path("plugins/flaky"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bridged_network(&d, "flaky", "10.98.0.0/24", &[serde_json::json!({"type": "flaky"})]);
    d.configure(
        "[network]\n",
        &format!("[network]\nplugin_dirs = [{:?}, \"/usr/lib/cni\"]\n", d.path("plugins").display().to_string()),
    );
    let d = d.start(&[]);
    d.write("web.toml", &web(&d, 80, "[namespaces]\nnetwork = \"flaky\"\n[restart]\nbackoff = \"0s\""));
    // Running, on the second try (its address is listed while it still starts).
    d.running_pid("web");
    let ip = address(&d, "web");
    assert!(ip.starts_with("10.98.0."), "{ip}");
    assert!(marker.exists(), "the first ADD failed");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("try again"), "the failure was said: {log}");
    assert_eq!(get_soon(&d, format!("{ip}:80").parse().unwrap()), "hello from paddock\n");
}

/// `paddock run` with the daemon's configuration, in the network
/// namespace the test made the daemon's host: `args` before the manifest,
/// `after` it (`--` and a command); stdin empty.
fn paddock_run(d: &Daemon, args: &[&str], manifest: &Path, after: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", d.host_netns.as_ref().expect("a host namespace of the test's").display()))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_paddock"))
        .args(["run", "--config"])
        .arg(d.path("paddock.toml"))
        .args(args)
        .arg(manifest)
        .args(after)
        .stdin(std::process::Stdio::null());
    cmd
}

/// Plugins written by the test (`plugins`: name and shell script) in the
/// daemon's plugin directory, before /usr/lib/cni, and networks of them
/// (`networks`: name and the plugins' types, in order).
fn fake_networks(d: &Daemon, plugins: &[(&str, String)], networks: &[(&str, &[&str])]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(d.path("plugins")).unwrap();
    for (name, script) in plugins {
        std::fs::write(d.path(&format!("plugins/{name}")), script).unwrap();
        std::fs::set_permissions(d.path(&format!("plugins/{name}")), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(d.path("networks")).unwrap();
    for (name, types) in networks {
        let plugins: Vec<serde_json::Value> = types.iter().map(|t| serde_json::json!({"type": t})).collect();
        let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(d.path(&format!("networks/{name}.conflist")), conflist.to_string()).unwrap();
    }
    d.configure(
        "[network]\n",
        &format!("[network]\nplugin_dirs = [{:?}, \"/usr/lib/cni\"]\n", d.path("plugins").display().to_string()),
    );
}

/// A plugin `sticky` that attaches (10.96.0.2), and cannot undo while
/// `stuck` exists, nor without the network namespace it was given (as the
/// bridge plugin needs it to find the rules it made).
fn sticky(stuck: &Path) -> (&'static str, String) {
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\ncase $CNI_COMMAND in\nADD) echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.96.0.2/24\"}}]}}' ;;\nDEL) [ -e {} ] && {{ echo '{{\"code\":11,\"msg\":\"stuck\"}}'; exit 1; }}\n nsenter --net=\"$CNI_NETNS\" true || {{ echo '{{\"code\":11,\"msg\":\"no namespace\"}}'; exit 1; }} ;;\nesac\nexit 0\n",
        stuck.display()
    );
    ("sticky", script)
}

/// The daemon keeps SIGTERM, SIGINT and SIGHUP blocked in its threads
/// (taken by one of its own); a CNI plugin it runs, and what the plugin
/// leaves running, gets them unblocked.
#[test]
fn a_plugin_runs_with_the_stop_signals_unblocked() {
    let d = prepared();
    let record = d.path("out/sigblk");
    // In Python: a shell empties its signal mask when it starts; Python,
    // as the Go of the real plugins, keeps the one it was given.
    let plugin = format!(
        "#!/usr/bin/python3\nimport os, sys\nsys.stdin.read()\nif os.environ.get('CNI_COMMAND') == 'ADD':\n    status = open('/proc/self/status').read().splitlines()\n    open({:?}, 'w').write([l for l in status if l.startswith('SigBlk')][0])\n    print('{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.96.0.2/24\"}}]}}')\n",
        record.display().to_string()
    );
    fake_networks(&d, &[("masks", plugin)], &[("fake", &["masks"])]);
    let d = d.start(&[]);
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"fake\""));
    d.running_pid("w");
    let line = std::fs::read_to_string(&record).unwrap();
    let mask = u64::from_str_radix(line.trim().trim_start_matches("SigBlk:").trim(), 16).unwrap();
    let stops = (1 << (libc::SIGHUP - 1)) | (1 << (libc::SIGINT - 1)) | (1 << (libc::SIGTERM - 1));
    assert_eq!(mask & stops, 0, "blocked in the plugin: {line}");
}

/// A plugin under way dies with the daemon that ran it (a crash, kill -9):
/// left running, it would go on making rules and addresses after the
/// next daemon has undone what the record says, with nothing to undo them.
#[test]
fn a_plugin_under_way_dies_with_a_killed_daemon() {
    let d = prepared();
    let pid_file = d.path("out/plugin.pid");
    let plugin = format!("#!/bin/sh\ncat > /dev/null\necho $$ > {}\nexec sleep 6127\n", pid_file.display());
    fake_networks(&d, &[("slow", plugin)], &[("fake", &["slow"])]);
    let mut d = d.start(&[]);
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"fake\""));
    d.wait_for("the plugin to run", |d| {
        std::fs::read_to_string(d.path("out/plugin.pid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let plugin: i64 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(common::daemon::alive(plugin));
    d.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !common::daemon::gone(plugin) {
        if Instant::now() > deadline {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(plugin as i32, libc::SIGKILL) };
            panic!("the plugin {plugin} outlived its daemon");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn what_a_plugin_could_not_undo_is_kept_and_undone_once_it_can_be() {
    let d = prepared();
    // `sticky` (see there) attaches and cannot undo while out/stuck exists;
    // `refuse` fails every ADD while out/refuse exists.
    let (stuck, refuse) = (d.path("out/stuck"), d.path("out/refuse"));
    let plugins = [
        sticky(&stuck),
        (
            "refuse",
            format!(
                "#!/bin/sh\ncat > /dev/null\n[ \"$CNI_COMMAND\" = ADD ] && [ -e {} ] && {{ echo '{{\"code\":7,\"msg\":\"refused\"}}'; exit 1; }}\nexit 0\n",
                refuse.display()
            ),
        ),
    ];
    fake_networks(&d, &plugins, &[("fake", &["sticky", "refuse"])]);
    d.configure("policy_dir", "resync_interval = \"1s\"\npolicy_dir");
    std::fs::write(&stuck, "").unwrap();
    std::fs::write(&refuse, "").unwrap();
    let d = d.start(&[]);
    let record = d.path("state/networks/w.json");
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"fake\"\n[restart]\nbackoff = \"1s\""));
    // The ADD failed, and so did undoing `sticky`'s part: its record stays.
    d.wait_for("the failure", |d| {
        d.workload("w").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("its record is kept")))
    });
    assert!(record.exists(), "what sticky made is still recorded");
    // The workload goes; its detachment fails, and is tried again once it can work.
    std::fs::remove_file(d.path("wl/w.toml")).unwrap();
    d.wait_for("w gone", |d| d.workload("w").is_none());
    std::thread::sleep(Duration::from_secs(2));
    assert!(record.exists(), "not undone while sticky cannot");
    let run = d.path("run/netns").display().to_string();
    let kept = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&run)).count();
    assert_eq!(kept, 1, "the namespace is kept for the next DEL");
    std::fs::remove_file(&stuck).unwrap();
    d.wait_for("the record undone", |_| !record.exists());
    let left: Vec<_> = std::fs::read_dir(d.path("run/netns"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "its namespace went with it: {left:?}");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("tried again later"), "{log}");

    // An attachment whose undoing began is never taken again, by a
    // successor either: half undone, it would run the workload without
    // what the DELs that did run removed.
    std::fs::remove_file(&refuse).unwrap();
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"fake\"\n[restart]\nbackoff = \"1s\""));
    d.running_pid("w");
    let first: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    std::fs::write(&stuck, "").unwrap();
    std::fs::remove_file(d.path("wl/w.toml")).unwrap();
    d.wait_for("w gone", |d| d.workload("w").is_none());
    d.wait_for("the undoing recorded", |_| {
        std::fs::read(&record)
            .is_ok_and(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap()["undoing"] == true)
    });
    let mut d = d;
    d.kill();
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"fake\"\n[restart]\nbackoff = \"1s\""));
    let d = d.start(&[]);
    d.wait_for("the start refused until the old attachment is undone", |d| {
        d.workload("w")
            .is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("undoing its previous network attachment")))
    });
    std::fs::remove_file(&stuck).unwrap();
    d.running_pid("w");
    let second: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_ne!(first["container_id"], second["container_id"], "a new attachment");
    assert!(second.get("undoing").is_none(), "{second}");
}

/// A daemon killed while a plugin of the chain runs its ADD: the record
/// holds what the plugins before it returned, and the successor's DEL
/// gives it to them as prevResult (the firewall plugin finds the rules it
/// made by the addresses in it; given none, it removes none).
#[test]
fn a_daemon_killed_in_the_middle_of_an_add_leaves_its_successor_the_result_so_far() {
    let d = prepared();
    let (hold, adding, log) = (d.path("out/hold"), d.path("out/adding"), d.path("out/dels"));
    let slow = format!(
        "#!/bin/sh\nin=$(cat)\ncase $CNI_COMMAND in\nADD) touch {adding}; while [ -e {hold} ]; do sleep 0.05; done ;;\nDEL) printf '%s\\n' \"$in\" >> {log} ;;\nesac\nexit 0\n",
        adding = adding.display(),
        hold = hold.display(),
        log = log.display()
    );
    fake_networks(&d, &[sticky(&d.path("out/never")), ("slow", slow)], &[("fake", &["sticky", "slow"])]);
    std::fs::write(&hold, "").unwrap();
    let mut d = d.start(&[]);
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"fake\""));
    d.wait_for("slow's ADD under way", |_| adding.exists());
    d.kill();
    std::fs::remove_file(&hold).unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path("state/networks/w.json")).unwrap()).unwrap();
    assert_eq!(record["so_far"]["ips"][0]["address"], "10.96.0.2/24", "{record}");
    let d = d.start(&[]);
    d.running_pid("w");
    let dels = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(dels.lines().next().unwrap()).unwrap();
    assert_eq!(first["prevResult"]["ips"][0]["address"], "10.96.0.2/24", "the successor's DEL: {dels}");
}

/// An attachment whose undoing failed is never taken again by the same
/// daemon either: an edit that needed a new one, reverted, does not bring
/// the half-undone one back.
#[test]
fn a_half_undone_attachment_is_not_reused_when_an_edit_is_reverted() {
    let d = prepared();
    let stuck = d.path("out/stuck");
    fake_networks(&d, &[sticky(&stuck)], &[("fake", &["sticky"])]);
    let d = d.start(&[]);
    let original =
        |hostname: &str| sleeper(&format!("{hostname}[namespaces]\nnetwork = \"fake\"\n[restart]\nbackoff = \"1s\""));
    d.write("w.toml", &original(""));
    d.running_pid("w");
    let record = d.path("state/networks/w.json");
    let id = |path: &Path| -> String {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        r["container_id"].as_str().unwrap().to_owned()
    };
    let first = id(&record);
    std::fs::write(&stuck, "").unwrap();
    // Another hostname: another attachment, and the old one cannot be undone.
    d.write("w.toml", &original("hostname = \"other\"\n"));
    d.wait_for("the edit's start refused", |d| {
        d.workload("w")
            .is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("undoing its previous network attachment")))
    });
    d.write("w.toml", &original(""));
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(d.workload("w").unwrap()["state"], "running", "not in the half-undone attachment");
    std::fs::remove_file(&stuck).unwrap();
    d.running_pid("w");
    assert_ne!(id(&record), first, "a new attachment");
}

/// A detachment that failed and is not due again yet when the daemon
/// stops is tried once more before it exits.
#[test]
fn a_stopping_daemon_tries_a_failed_detachment_again_before_it_exits() {
    let d = prepared();
    let stuck = d.path("out/stuck");
    fake_networks(&d, &[sticky(&stuck)], &[("fake", &["sticky"])]);
    let mut d = d.start(&[]);
    d.write("w.toml", &sleeper("[namespaces]\nnetwork = \"fake\""));
    d.running_pid("w");
    let record = d.path("state/networks/w.json");
    std::fs::write(&stuck, "").unwrap();
    std::fs::remove_file(d.path("wl/w.toml")).unwrap();
    // It failed; the next try is due a second later, at a later pass
    // (the rescan, every 30 s here).
    let failures = |d: &Daemon| {
        std::fs::read_to_string(d.path("out/daemon.log")).unwrap().matches("cannot undo its network attachment").count()
    };
    d.wait_for("the failed detachment", |d| failures(d) == 1);
    std::fs::remove_file(&stuck).unwrap();
    assert!(record.exists(), "not undone yet");
    assert_eq!(d.terminate(), 0);
    assert!(!record.exists(), "undone at the exit");
    assert_eq!(failures(&d), 1);
}

/// `paddock stop` queues the network's release; a `paddock start` before
/// it ran (the network workers busy) makes a new attachment, and the
/// release never undoes the one the new run is in.
#[test]
fn a_start_before_the_stops_release_ran_is_never_left_without_its_network() {
    let d = prepared();
    let (hold, log) = (d.path("out/hold"), d.path("out/cni.log"));
    let plugins = [
        (
            "logged",
            format!(
                "#!/bin/sh\ncat > /dev/null\necho \"$CNI_COMMAND $CNI_CONTAINERID\" >> {}\n[ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.96.0.2/24\"}}]}}'\nexit 0\n",
                log.display()
            ),
        ),
        (
            "slow",
            format!(
                "#!/bin/sh\ncat > /dev/null\ntouch {}/slow-$CNI_COMMAND-$CNI_CONTAINERID\nwhile [ -e {} ]; do sleep 0.05; done\n[ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.97.0.2/24\"}}]}}'\nexit 0\n",
                d.path("out").display(),
                hold.display()
            ),
        ),
    ];
    fake_networks(&d, &plugins, &[("logged", &["logged"]), ("slow", &["slow"])]);
    let d = d.start(&[]);
    d.write("web.toml", &sleeper("[namespaces]\nnetwork = \"logged\""));
    d.running_pid("web");
    // Every network worker busy with a start that waits for out/hold.
    std::fs::write(&hold, "").unwrap();
    for i in 0..4 {
        d.write(&format!("b{i}.toml"), &sleeper("[namespaces]\nnetwork = \"slow\""));
    }
    let waiting = |d: &Daemon| {
        std::fs::read_dir(d.path("out")).map_or(0, |e| {
            e.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("slow-ADD-"))).count()
        })
    };
    d.wait_for("the four workers busy", |d| waiting(d) == 4);
    assert!(d.paddock(&["stop", "web"]).status.success());
    assert!(d.paddock(&["start", "--no-block", "web"]).status.success());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&hold).unwrap();
    d.wait_for("web running and the workers idle", |d| {
        d.workload("web").is_some_and(|w| w["state"] == "running")
            && (0..4).all(|i| d.workload(&format!("b{i}")).is_some_and(|w| w["state"] == "running"))
    });
    std::thread::sleep(Duration::from_millis(500));
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path("state/networks/web.json")).expect("web's attachment is recorded"),
    )
    .unwrap();
    let id = record["container_id"].as_str().unwrap();
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(&format!("ADD {id}")), "{calls}");
    assert!(!calls.contains(&format!("DEL {id}")), "the running web's attachment was undone:\n{calls}");
    let web = d.workload("web").unwrap();
    assert_eq!(web["addresses"], serde_json::json!(["10.96.0.2/24"]), "status shows its network: {web}");
}

#[test]
fn a_restart_or_an_edit_keeps_the_network_and_a_new_port_replaces_it_cleanly() {
    let d = daemon();
    d.write("web.toml", &web(&d, 80, "ports = [\"8091:80\"]"));
    let ip = address(&d, "web");
    let first = d.running_pid("web");
    // `paddock restart`, then an edit that leaves the network alone.
    assert!(d.paddock(&["restart", "web"]).status.success());
    d.wait_for("a new run", |d| d.workload("web").is_some_and(|w| w["state"] == "running" && w["pid"] != first));
    let restarted = d.running_pid("web");
    d.write("web.toml", &web(&d, 80, "ports = [\"8091:80\"]\nenv = { EDITED = \"1\" }"));
    // The edit's own run: not the restart's, which is still running when the file lands.
    d.wait_for("the edit to run", |d| {
        d.workload("web").is_some_and(|w| w["state"] == "running" && w["restarts"] == 0 && w["pid"] != restarted)
    });
    assert_eq!(address(&d, "web"), ip, "the same address through both");
    assert_eq!(get_soon(&d, "127.0.0.1:8091".parse().unwrap()), "hello from paddock\n");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert_eq!(log.matches("network attached").count(), 1, "{log}");
    assert_eq!(log.matches("network detached").count(), 0, "{log}");
    // Another host port: the old attachment is undone, then a new one made.
    d.write("web.toml", &web(&d, 80, "ports = [\"8092:80\"]"));
    assert_eq!(get_soon(&d, "127.0.0.1:8092".parse().unwrap()), "hello from paddock\n");
    let now = leftovers(&d);
    assert_eq!((now.veths, now.allocations, now.mounts), (1, 1, 1), "{now:?}");
    assert!(now.rules.iter().all(|r| !r.contains("8091")), "the old port's rules are gone: {:?}", now.rules);
    assert!(get(&d, "127.0.0.1:8091".parse().unwrap()).is_err(), "the old port no longer answers");
}

#[test]
fn after_a_daemon_restart_the_running_workload_keeps_its_port_against_a_refused_newcomer() {
    let mut d = daemon();
    d.write("web.toml", &sleeper("ports = [\"8093:80\"]"));
    let pid = d.running_pid("web");
    d.write("api.toml", &sleeper("ports = [\"8093:81\"]"));
    d.wait_for("api refused", |d| d.workload("api").is_some_and(|w| w["state"] == "invalid"));
    d.kill();
    d = d.start(&[]);
    d.wait_for("api refused again", |d| d.workload("api").is_some_and(|w| w["state"] == "invalid"));
    let web = d.workload("web").unwrap();
    assert_eq!((web["state"].as_str(), web["pid"].as_i64()), (Some("running"), Some(pid)), "{web}");
    let error = d.workload("api").unwrap()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("already published by web.toml"), "{error}");
}

/// A bad edit made while no daemon ran: the next daemon runs the web
/// server on with the manifest it was started from, so it keeps its
/// address and its published port, which a newcomer is refused.
#[test]
fn a_bad_edit_found_by_the_next_daemon_keeps_the_running_version_its_network_and_its_port() {
    let mut d = daemon();
    d.write("web.toml", &web(&d, 80, "ports = [\"8094:80\"]"));
    let pid = d.running_pid("web");
    let ip = address(&d, "web");
    d.kill();
    d.write("web.toml", &web(&d, 80, "ports = [\"8094:80\"]\nhostname = 7"));
    d.write("api.toml", &sleeper("ports = [\"8094:81\"]"));
    d = d.start(&[]);
    d.wait_for("api refused", |d| d.workload("api").is_some_and(|w| w["state"] == "invalid"));
    let error = d.workload("api").unwrap()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("host port 8094/tcp is already published by web.toml"), "{error}");
    let web = d.workload("web").unwrap();
    assert_eq!((web["state"].as_str(), web["pid"].as_i64()), (Some("running"), Some(pid)), "{web}");
    assert!(web["error"].as_str().is_some_and(|e| e.contains("hostname")), "{web}");
    assert_eq!(address(&d, "web"), ip);
    assert_eq!(get_soon(&d, "127.0.0.1:8094".parse().unwrap()), "hello from paddock\n");
}

/// `plan` says what the daemon does: an unchanged file keeps its port
/// (here a workload held by `paddock stop`), and an edit of a running
/// workload that wants it is refused, not planned as a restart.
#[test]
fn plan_and_the_daemon_refuse_an_edit_that_wants_a_port_an_unchanged_file_holds() {
    let d = daemon();
    d.write("x.toml", &sleeper("ports = [\"8095:80\"]"));
    d.write("y.toml", &sleeper("ports = [\"8096:80\"]"));
    d.running_pid("x");
    let y = d.running_pid("y");
    assert!(d.paddock(&["stop", "x"]).status.success());
    let next = d.path("next");
    std::fs::create_dir(&next).unwrap();
    std::fs::copy(d.path("wl/x.toml"), next.join("x.toml")).unwrap();
    std::fs::write(next.join("y.toml"), sleeper("ports = [\"8095:81\"]")).unwrap();
    let out = d.paddock(&["plan", next.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("would restart y"), "{text}");
    assert!(text.contains("y.toml:3:10: error: host port 8095/tcp is already published by x.toml"), "{text}");
    assert!(!text.contains("x.toml:3"), "the unchanged file is not refused: {text}");
    // The daemon, given the same edit.
    d.write("y.toml", &sleeper("ports = [\"8095:81\"]"));
    d.wait_for("y's edit refused", |d| {
        d.workload("y").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("already published by x.toml")))
    });
    assert_eq!(d.running_pid("y"), y, "y's old version runs on");
}

#[test]
fn http_and_tcp_probes_reach_a_bridge_networked_workload_from_inside_its_namespace() {
    let d = daemon();
    let probe = |what: &str| {
        format!("ports = [\"18080:80\"]\n[health]\n{what}\ninterval = \"200ms\"\nretries = 2\non_unhealthy = \"mark\"")
    };
    d.write("hhttp.toml", &web(&d, 80, &probe("http = { port = 80, path = \"/index.html\" }")));
    d.write("htcp.toml", &web(&d, 80, &probe("tcp = 80").replace("18080", "18081")));
    // Nothing listens on 81: refused from inside, so unhealthy (and only marked).
    d.write("hnone.toml", &web(&d, 80, &probe("tcp = 81").replace("18080", "18082")));
    for name in ["hhttp", "htcp"] {
        d.wait_for(&format!("{name} healthy"), |d| d.workload(name).is_some_and(|w| w["health"] == "healthy"));
        assert_eq!(d.workload(name).unwrap()["network"], "bridge");
    }
    d.wait_for("hnone unhealthy", |d| d.workload("hnone").is_some_and(|w| w["health"] == "unhealthy"));
    let out = d.paddock(&["status", "--json", "hnone"]);
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = detail["probes"].to_string();
    assert!(said.contains("127.0.0.1:81") && said.contains("refused"), "{said}");
    assert_eq!(d.workload("hnone").unwrap()["state"], "running", "mark only");
}
