//! Restarts overlap: a run in a pid namespace of its own ends with its
//! init's report, and the next run starts while the old init still exits.
//! What must hold anyway: never two runs of a workload at once, the
//! cgroup handed from run to run, each run's record its own, and nothing
//! left behind (no init, no zombie, no cgroup, no record), across daemon
//! kills during the overlap. (Root, user namespaces and a cgroup2 mount
//! required.)

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, gone, own_processes};

/// The host's cgroup2 mount: /sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let found = mounts.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.get(2) == Some(&"cgroup2"));
    PathBuf::from(found.expect("this test needs a cgroup2 mount (v2 or hybrid hosts have one)")[1])
}

/// A daemon whose sandboxes get v2 cgroups (one per sandbox, always).
fn on_cgroup_v2() -> (Daemon, PathBuf) {
    let root = cgroup2_mount();
    let d = Daemon::setup();
    d.configure("policy_dir", &format!("cgroup_root = {:?}\npolicy_dir", root.display().to_string()));
    (d, root)
}

/// A workload that exits at once, restarted with no backoff: runs follow
/// each other 100 ms apart (the floor between two starts), each writing
/// a line to out/runs.
fn looping(d: &Daemon) -> String {
    looping_with(d, CMD)
}

fn looping_with(d: &Daemon, cmd: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", \"{cmd}\"]\n[restart]\npolicy = \"always\"\nbackoff = \"0s\"\nmax_retries = 0\n[[mounts]]\nsource = {:?}\ntarget = \"/out\"\nreadonly = false\n",
        d.path("out").display().to_string()
    )
}

const CMD: &str = "echo run >> /out/runs; exit 1";

/// Longer than the 100 ms floor between starts: the next run starts the
/// moment this one ends, while its init still exits (the cgroup is handed over).
const LONGER: &str = "echo run >> /out/runs; sleep 0.12; exit 1";

fn runs(d: &Daemon) -> Vec<String> {
    std::fs::read_to_string(d.path("out/runs")).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// The daemon's children that are zombies (an init left unreaped).
fn zombie_children(daemon: u32) -> Vec<String> {
    let children = std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        })
        .map(str::to_owned)
        .collect()
}

fn parent(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn writable_out(d: &Daemon) {
    std::fs::set_permissions(d.path("out"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
}

#[test]
fn a_restart_loop_hands_its_cgroup_over_and_leaves_nothing_behind() {
    let (d, root) = on_cgroup_v2();
    writable_out(&d);
    let mut d = d.start(&[]);
    let daemon = d.child.as_ref().unwrap().id();
    d.write("handover.toml", &looping_with(&d, LONGER));
    let cgroup = root.join("paddock/handover");
    // Never two runs at once, while it loops; each in the workload's
    // cgroup, handed from run to run.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut inits = std::collections::BTreeSet::new();
    while runs(&d).len() < 20 {
        assert!(Instant::now() < deadline, "20 runs in 30 s; the log says:\n{}", log(&d));
        let both = own_processes(&d, &["/bin/sh", "-c", LONGER]);
        assert!(both.len() <= 1, "two runs at once: {both:?}");
        for sh in both {
            let Some(init) = parent(sh) else { continue };
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{init}/cgroup")) {
                let line = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("").to_owned();
                assert!(line.is_empty() || line.ends_with("/paddock/handover"), "a run outside its cgroup: {line}");
                inits.insert(init);
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(inits.len() >= 2, "runs seen in their cgroup: {inits:?}");
    // An OOM kill is a run's own: none here, though the cgroup lived on.
    let status = d.workload("handover").unwrap();
    assert_eq!(status["last_exit"], 1, "{status}");
    let out = d.paddock(&["stop", "handover"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_for("handover stopped, its init reaped", |d| {
        d.workload("handover").is_some_and(|w| w["state"] == "stopped")
            && !d.path("state/sandboxes/handover.json").exists()
    });
    d.wait_for("its cgroup removed", |_| !cgroup.exists());
    assert_eq!(zombie_children(daemon), Vec::<String>::new(), "an init left a zombie");
    assert_eq!(d.terminate(), 0);
}

/// Each record is its run's: while a run runs, the record on disk names
/// its init; the end of the run before it (whose init is reaped after the
/// new run started) never removes it.
#[test]
fn each_record_is_its_runs_and_an_old_end_never_removes_the_new_one() {
    let d = Daemon::setup().start(&[]);
    d.write(
        "rec.toml",
        "command = [\"/bin/sh\", \"-c\", \"sleep 0.3; exit 1\"]\n[restart]\npolicy = \"always\"\nbackoff = \"0s\"\nmax_retries = 0\n",
    );
    let record = d.path("state/sandboxes/rec.json");
    let running = |d: &Daemon| d.workload("rec").filter(|w| w["state"] == "running").and_then(|w| w["pid"].as_i64());
    let mut checked = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while checked.len() < 8 {
        assert!(Instant::now() < deadline, "8 runs in 30 s; the log says:\n{}", log(&d));
        std::thread::sleep(Duration::from_millis(20));
        let Some(pid) = running(&d) else { continue };
        let named = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|r| r["pid"].as_i64());
        // Running before and after the read: its record was on disk throughout.
        if running(&d) == Some(pid) {
            assert_eq!(named, Some(pid), "run {pid} runs without its record");
            checked.insert(pid);
        }
    }
}

fn log(d: &Daemon) -> String {
    std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default()
}

/// A daemon killed at any point of restarts that overlap (the next run
/// starting while the last one's init exits): its successor adopts the run
/// that runs, or starts a new one, and in the end nothing is left: no
/// init, no workload, no cgroup, no record.
#[test]
fn daemon_kills_during_overlapping_restarts_leave_one_run_and_nothing_after() {
    let (d, root) = on_cgroup_v2();
    writable_out(&d);
    let mut d = d.start(&[]);
    d.write("crashy.toml", &looping(&d));
    let cgroup = root.join("paddock/crashy");
    d.wait_for("a few runs", |d| runs(d).len() >= 3);
    let mut seed = u64::from(std::process::id()) | 1;
    let mut inits = Vec::new();
    for _ in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Anywhere in a run's 100 ms: at its end, its report, the overlap.
        std::thread::sleep(Duration::from_millis(seed % 120));
        if let Some(w) = d.workload("crashy")
            && let Some(pid) = w["pid"].as_i64()
        {
            inits.push(pid);
        }
        let mut child = d.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let n = runs(&d).len();
        d = d.start(&[]);
        d.wait_for("runs again after the kill", |d| runs(d).len() > n + 1);
        let both = own_processes(&d, &["/bin/sh", "-c", CMD]);
        assert!(both.len() <= 1, "two runs at once: {both:?}");
    }
    let daemon = d.child.as_ref().unwrap().id();
    assert_eq!(d.terminate(), 0);
    assert!(!cgroup.exists(), "the cgroup is left: {}", cgroup.display());
    assert!(std::fs::read_dir(d.path("state/sandboxes")).map_or(true, |mut e| e.next().is_none()), "a record is left");
    assert_eq!(own_processes(&d, &["/bin/sh", "-c", CMD]), Vec::<i64>::new(), "a workload is left");
    // Every init seen is gone (or a zombie of a dead daemon, which its new parent reaps).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !inits.iter().all(|p| gone(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = inits.iter().filter(|p| !gone(**p)).collect();
    assert!(left.is_empty(), "inits left running: {left:?}");
    let _ = daemon;
}

/// Upgrades in place amid overlapping restarts: the init of a run that
/// ended may still be exiting, a child of this process that the new image
/// (which knows only the records) would never reap; the old image reaps
/// it before its exec, so none is left a zombie.
#[test]
fn upgrades_amid_overlapping_restarts_leave_no_zombie() {
    let d = Daemon::setup();
    writable_out(&d);
    let mut d = d.start(&[]);
    let daemon = d.child.as_ref().unwrap().id();
    d.write("upgraded.toml", &looping(&d));
    d.wait_for("a few runs", |d| runs(d).len() >= 3);
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(13 * i));
        let out = d.paddock(&["upgrade"]);
        assert!(out.status.success(), "{out:?}");
    }
    let n = runs(&d).len();
    d.wait_for("runs after the upgrades", |d| runs(d).len() > n + 2);
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the same process runs on");
    // A zombie that stays (seen twice, a while apart) is one nobody will reap.
    let before = zombie_children(daemon);
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<String> = zombie_children(daemon).into_iter().filter(|z| before.contains(z)).collect();
    assert_eq!(left, Vec::<String>::new(), "inits an upgrade left zombies");
    assert_eq!(d.terminate(), 0);
}
