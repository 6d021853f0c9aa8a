//! Health checks and start order with a real daemon and real sandboxes.
//! (Root and user namespaces required.)

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::sandbox::busybox_manifest;
use serde_json::Value;

/// A busybox httpd on 127.0.0.1:PORT inside the workload, serving "ok".
fn server(port: u16, then: &str) -> String {
    format!("mkdir -p /tmp/www && echo ok > /tmp/www/index.html && httpd -f -p 127.0.0.1:{port} -h /tmp/www & {then}")
}

fn detail(d: &Daemon, name: &str) -> Value {
    let out = d.paddock(&["status", "--json", name]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn events(d: &Daemon, name: &str) -> Vec<String> {
    changes(&detail(d, name))
}

/// What a workload's detail says happened to it, oldest first.
fn changes(detail: &Value) -> Vec<String> {
    detail["changes"]
        .as_array()
        .map_or(Vec::new(), |c| c.iter().map(|c| c["event"].as_str().unwrap_or("").to_owned()).collect())
}

#[test]
fn an_http_probe_makes_a_private_workload_healthy_and_a_server_that_stops_answering_is_restarted() {
    let mut d = Daemon::setup().start(&[]);
    // Serves for 2 s, then stops answering while its sandbox lives on.
    let manifest = busybox_manifest(
        &server(8080, "sleep 2; kill $!; exec sleep 1000"),
        "[health]\nhttp = { port = 8080, path = \"/index.html\" }\ninterval = \"200ms\"\ntimeout = \"1s\"\nretries = 3\n",
    );
    d.write("hweb.toml", &manifest);
    d.wait_for("hweb healthy", |d| d.workload("hweb").is_some_and(|w| w["health"] == "healthy"));
    let table = String::from_utf8_lossy(&d.paddock(&["status"]).stdout).into_owned();
    assert!(table.contains("running (healthy)"), "{table}");
    let view = d.paddock(&["status", "hweb"]);
    assert!(String::from_utf8_lossy(&view.stdout).contains(" 200 OK"), "the last probes are shown");
    // It stops answering: unhealthy after three failures in a row, then restarted.
    d.wait_for("hweb restarted", |d| d.workload("hweb").is_some_and(|w| w["restarts"].as_u64() >= Some(1)));
    let said = events(&d, "hweb");
    let unhealthy = said.iter().position(|e| e == "health: unhealthy").expect("unhealthy noted");
    assert!(said[..unhealthy].iter().any(|e| e == "health: healthy"), "{said:?}");
    assert!(said[unhealthy..].iter().any(|e| e.starts_with("stopping with SIGTERM (unhealthy")), "{said:?}");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_tcp_probe_and_a_command_probe_and_mark_only() {
    let mut d = Daemon::setup().start(&[]);
    d.write("htcp.toml", &busybox_manifest(&server(9000, "wait"), "[health]\ntcp = 9000\ninterval = \"200ms\"\n"));
    // Ready once it has made /tmp/ready; never restarted (mark only) while it is not.
    d.write(
        "hcmd.toml",
        &busybox_manifest(
            "sleep 2; touch /tmp/ready; exec sleep 1000",
            "[health]\ncommand = [\"test\", \"-f\", \"/tmp/ready\"]\ninterval = \"200ms\"\nretries = 1\non_unhealthy = \"mark\"\n",
        ),
    );
    d.wait_for("htcp healthy", |d| d.workload("htcp").is_some_and(|w| w["health"] == "healthy"));
    d.wait_for("hcmd healthy", |d| d.workload("hcmd").is_some_and(|w| w["health"] == "healthy"));
    // Read at once, while its last five probes still hold a failed one.
    let hcmd = detail(&d, "hcmd");
    // Unhealthy first (read from its history: the state itself may have passed).
    let said = changes(&hcmd);
    let unhealthy = said.iter().position(|e| e == "health: unhealthy").expect("unhealthy noted");
    assert!(said[unhealthy..].iter().any(|e| e == "health: healthy"), "{said:?}");
    assert_eq!(hcmd["restarts"], 0, "mark only: not restarted");
    let probes = hcmd["probes"].as_array().cloned().unwrap_or_default();
    assert!(
        probes.iter().any(|p| p["ok"] == false && p["output"].as_str().unwrap_or("").contains("exit 1")),
        "{probes:?}"
    );
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_command_probe_that_closes_its_output_and_lingers_times_out() {
    let mut d = Daemon::setup().start(&[]);
    d.write(
        "hlinger.toml",
        &busybox_manifest(
            "exec sleep 1000",
            "[health]\ncommand = [\"sh\", \"-c\", \"exec >/dev/null 2>&1; sleep 100\"]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nretries = 1\non_unhealthy = \"mark\"\n",
        ),
    );
    // Its output's end is not its end: the probe's deadline still holds.
    d.wait_for("hlinger unhealthy", |d| d.workload("hlinger").is_some_and(|w| w["health"] == "unhealthy"));
    let probes = detail(&d, "hlinger")["probes"].as_array().cloned().unwrap_or_default();
    assert!(
        probes.iter().any(|p| p["ok"] == false && p["output"].as_str().unwrap_or("").contains("timed out after 500ms")),
        "{probes:?}"
    );
    assert_eq!(d.terminate(), 0);
}

/// A command probe that times out takes what it started with it (its
/// process group): they do not pile up in the workload, using its pids.
#[test]
fn a_command_probe_that_times_out_leaves_none_of_its_processes() {
    let mut d = Daemon::setup().start(&[]);
    d.write(
        "hpile.toml",
        &busybox_manifest(
            "exec sleep 1000",
            "[health]\ncommand = [\"sh\", \"-c\", \"sleep 7731; true\"]\ninterval = \"200ms\"\ntimeout = \"300ms\"\nretries = 1\non_unhealthy = \"mark\"\n",
        ),
    );
    d.wait_for("hpile unhealthy", |d| d.workload("hpile").is_some_and(|w| w["health"] == "unhealthy"));
    let timed_out = |d: &Daemon| {
        let probes = detail(d, "hpile")["probes"].as_array().cloned().unwrap_or_default();
        probes.iter().filter(|p| p["output"].as_str().unwrap_or("").contains("timed out after 300ms")).count()
    };
    d.wait_for("four probes timed out", |d| timed_out(d) >= 4);
    let left = common::daemon::processes(&["sleep", "7731"]);
    assert!(left.len() <= 1, "the probes' sleeps live on: {left:?}");
    // A command that ends at once, leaving what it started holding its
    // output: that goes with it, and the probe passes.
    d.write(
        "hquick.toml",
        &busybox_manifest(
            "exec sleep 1000",
            "[health]\ncommand = [\"sh\", \"-c\", \"sleep 7732 & true\"]\ninterval = \"200ms\"\ntimeout = \"300ms\"\n",
        ),
    );
    d.wait_for("hquick healthy", |d| d.workload("hquick").is_some_and(|w| w["health"] == "healthy"));
    std::thread::sleep(Duration::from_millis(1000));
    let left = common::daemon::processes(&["sleep", "7732"]);
    assert!(left.len() <= 1, "the probes' sleeps live on: {left:?}");
    assert_eq!(d.terminate(), 0);
}

/// The daemon's thread that makes probes' sockets in their workloads'
/// network namespaces does not keep the last one alive once its workload
/// is gone.
#[test]
fn a_probed_workloads_network_namespace_goes_with_it() {
    let mut d = Daemon::setup().start(&[]);
    d.write("hprobed.toml", &busybox_manifest(&server(9100, "wait"), "[health]\ntcp = 9100\ninterval = \"200ms\"\n"));
    d.wait_for("hprobed healthy", |d| d.workload("hprobed").is_some_and(|w| w["health"] == "healthy"));
    let init = d.running_pid("hprobed");
    let netns = std::fs::read_link(format!("/proc/{init}/ns/net")).unwrap();
    std::fs::remove_file(d.path("wl/hprobed.toml")).unwrap();
    d.wait_for("hprobed gone", |d| d.workload("hprobed").is_none());
    let daemon = d.child.as_ref().unwrap().id();
    let holders: Vec<String> = std::fs::read_dir(format!("/proc/{daemon}/task"))
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_link(t.path().join("ns/net")).is_ok_and(|ns| ns == netns))
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(holders.is_empty(), "daemon threads {holders:?} are in the removed workload's {}", netns.display());
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_chain_starts_in_order_waiting_for_health_and_a_cycle_is_refused_naming_both_files() {
    let mut d = Daemon::setup().start(&[]);
    d.write(
        "odb.toml",
        &busybox_manifest(
            "sleep 1; touch /tmp/up; exec sleep 1000",
            "[health]\ncommand = [\"test\", \"-f\", \"/tmp/up\"]\ninterval = \"200ms\"\nstart_period = \"10s\"\n",
        ),
    );
    d.write("oapp.toml", &busybox_manifest("exec sleep 1000", "after = [\"odb\"]\n"));
    d.write("oweb.toml", &busybox_manifest("exec sleep 1000", "after = [\"oapp\"]\n"));
    d.write("ocyc-a.toml", &busybox_manifest("exec sleep 1000", "after = [\"ocyc-b\"]\n"));
    d.write("ocyc-b.toml", &busybox_manifest("exec sleep 1000", "after = [\"ocyc-a\"]\n"));
    d.write("olone.toml", &busybox_manifest("exec sleep 1000", "after = [\"nobody\"]\n"));
    // It waits, and says for whom and why: odb runs but is not healthy
    // yet for a second at least (odb may not have begun when oapp is first
    // seen, and then it is "odb (stopped)").
    d.wait_for("oapp waiting for odb (starting)", |d| {
        d.workload("oapp").is_some_and(|w| w["state"] == "waiting" && w["waiting_for"][0] == "odb (starting)")
    });
    d.wait_for("oweb running", |d| d.workload("oweb").is_some_and(|w| w["state"] == "running"));
    // In order: each started only after what it comes after was ready.
    let first = |name: &str, what: &str| -> String {
        detail(&d, name)["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["event"].as_str().unwrap_or("").starts_with(what))
            .map(|c| c["time"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (db_healthy, app_starts) = (first("odb", "health: healthy"), first("oapp", "starting"));
    let (app_started, web_starts) = (first("oapp", "started"), first("oweb", "starting"));
    assert!(!db_healthy.is_empty() && db_healthy <= app_starts, "{db_healthy} <= {app_starts}");
    assert!(!app_started.is_empty() && app_started <= web_starts, "{app_started} <= {web_starts}");
    // The cycle: both files refused, each naming the circle; the rest runs.
    for name in ["ocyc-a", "ocyc-b"] {
        let w = d.workload(name).unwrap();
        assert_eq!(w["state"], "invalid", "{w}");
        let error = w["error"].as_str().unwrap_or("");
        assert!(error.contains("ocyc-a.toml") && error.contains("ocyc-b.toml") && error.contains("circle"), "{error}");
    }
    // A name no manifest defines: it waits, and says for whom.
    let lone = d.workload("olone").unwrap();
    assert_eq!(lone["state"], "waiting");
    assert_eq!(lone["waiting_for"][0], "nobody (no manifest defines it)");
    // Removing a dependency leaves its dependent waiting, with the reason
    // (once the removals count: a file gone counts as removed after 100 ms,
    // and a change meanwhile does not wait for it).
    std::fs::remove_file(d.path("wl/oweb.toml")).unwrap();
    std::fs::remove_file(d.path("wl/oapp.toml")).unwrap();
    d.wait_for("oweb and oapp removed", |d| d.workload("oweb").is_none() && d.workload("oapp").is_none());
    d.write("oweb.toml", &busybox_manifest("exec sleep 1000 ", "after = [\"oapp\"]\n"));
    d.wait_for("oweb waits for oapp", |d| {
        d.workload("oweb").is_some_and(|w| w["waiting_for"][0] == "oapp (no manifest defines it)")
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["check", "--policy", "privileged", d.path("wl").to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("no manifest defines `oapp`") && said.contains("start order goes round"), "{said}");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_hundred_hanging_probes_do_not_slow_the_daemon() {
    let mut d = Daemon::setup().start(&[]);
    for i in 0..100 {
        d.write(
            &format!("hang{i}.toml"),
            &busybox_manifest(
                "exec sleep 1000",
                "[health]\ncommand = [\"sleep\", \"100\"]\ninterval = \"100ms\"\ntimeout = \"30s\"\n",
            ),
        );
    }
    d.wait_for("100 running", |d| d.status().iter().filter(|w| w["state"] == "running").count() == 100);
    // Every probe is out (each hangs for 30 s); the daemon answers at once.
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let (took, answer) = d.timed_status();
        assert!(answer.contains("\"hang99\""), "{answer}");
        slowest = slowest.max(took);
    }
    eprintln!("status with 100 probes hanging: slowest of 20 answers {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "status took {slowest:?} while probes hung");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn at_shutdown_a_workload_is_stopped_before_what_it_comes_after() {
    let mut d = Daemon::setup().start(&[]);
    std::fs::create_dir(d.path("order")).unwrap();
    std::fs::set_permissions(d.path("order"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // Written by both (each workload has ids of its own).
    std::fs::write(d.path("order/log"), "").unwrap();
    std::fs::set_permissions(d.path("order/log"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mount = format!(
        "[[mounts]]\nsource = {:?}\ntarget = \"/order\"\nreadonly = false\n",
        d.path("order").display().to_string()
    );
    // The dependent takes a while to stop: stopped together, the db would write first.
    let stopper = |name: &str, pause: u32| {
        format!(
            "trap 'sleep {pause}; echo {name} >> /order/log; exit 0' TERM; echo up > /order/{name}; while :; do sleep 0.2; done"
        )
    };
    d.write("sdb.toml", &busybox_manifest(&stopper("sdb", 0), &mount));
    d.write("sapp.toml", &busybox_manifest(&stopper("sapp", 1), &format!("after = [\"sdb\"]\n{mount}")));
    d.wait_for("both up", |d| d.path("order/sdb").exists() && d.path("order/sapp").exists());
    assert_eq!(d.terminate(), 0);
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default();
    assert_eq!(std::fs::read_to_string(d.path("order/log")).unwrap(), "sapp\nsdb\n", "{log}");
}

/// A daemon that re-executes itself (an upgrade, or a reload of a changed
/// configuration) takes up its runs' health where their probes left it:
/// not "starting" until a probe answers again, nor a change logged that
/// it did not have (helper-109). After a crash it is probed at once.
#[test]
fn an_upgraded_daemon_keeps_the_health_its_probes_gave_its_runs() {
    let d = Daemon::setup().start(&[]);
    // Each probe takes 3 s: a run not handed its health would show
    // "starting" as long.
    let check = "[health]\ncommand = [\"sleep\", \"3\"]\ninterval = \"200ms\"\ntimeout = \"10s\"\n";
    d.write("hslow.toml", &busybox_manifest("exec sleep 1000", check));
    let pid = d.running_pid("hslow");
    d.wait_for("hslow healthy", |d| d.workload("hslow").is_some_and(|w| w["health"] == "healthy"));
    let daemon = d.child.as_ref().unwrap().id();
    d.configure("policy_dir = ", "policies = [\"baseline\"]\npolicy_dir = ");
    let out = d.paddock(&["reload"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("re-executing "), "{out:?}");
    d.wait_for("the new image to answer", |d| d.workload("hslow").is_some());
    assert_eq!(d.child.as_ref().unwrap().id(), daemon, "re-executed in place");
    let w = d.workload("hslow").unwrap();
    assert!(w["pid"] == pid && w["health"] == "healthy", "adopted as it was: {w}");
    assert!(!d.path("state/health.handed.json").exists(), "taken");
    // Probed again (at once, on adoption): still healthy, and nothing said changed.
    d.wait_for("a probe of the adopted run", |d| {
        detail(d, "hslow")["probes"].as_array().is_some_and(|p| !p.is_empty())
    });
    assert_eq!(d.workload("hslow").unwrap()["health"], "healthy");
    assert!(!events(&d, "hslow").iter().any(|e| e.starts_with("health:")), "{:?}", events(&d, "hslow"));
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert_eq!(log.matches("health changed").count(), 1, "once, before the upgrade: {log}");
}
