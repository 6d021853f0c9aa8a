//! A daemon killed with SIGKILL at any point of a burst of starts: the
//! half-built sandboxes go with it, none holds the daemon's lock or socket,
//! and its successor starts each workload exactly once. (Root and user
//! namespaces required.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{Daemon, SLEEPER, own_processes, processes};

const WORKLOADS: usize = 40;

fn manifest(i: usize) -> String {
    format!("command = [\"/bin/sleep\", \"{}\"]\n", 100_000 + i)
}

/// Processes that hold `path` open (through /proc/PID/fd).
fn holders(path: &Path) -> Vec<i64> {
    let want = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|fds| fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == want)))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_daemon_killed_during_starts_never_locks_out_duplicates_or_orphans() {
    let mut d = Daemon::setup();
    for i in 0..WORKLOADS {
        d.write(&format!("w{i:02}.toml"), &manifest(i));
    }
    // Kill points spread over the burst (before, during and after the
    // starts), then as many at random; the seed is in every message, to
    // replay a failure.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = Rng(seed);
    let spread = [0u64, 3, 9, 17, 30, 45, 70, 99];
    let random: Vec<u64> = (0..8).map(|_| rng.next(120)).collect();
    for (round, delay_ms) in spread.into_iter().chain(random).enumerate() {
        d = d.start(&[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill();
        // No child of the dead daemon may linger holding its lock (or anything else).
        let lock = d.path("state/daemon.lock");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !holders(&lock).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} (kill after {delay_ms} ms, seed {seed}): {:?} still hold the dead daemon's lock",
                holders(&lock)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The successor comes up (it would be refused if the lock were held) and
    // converges to exactly one sandbox per workload.
    d = d.start(&[]);
    d.wait_for("every workload running", |d| {
        d.status().iter().filter(|w| w["state"] == "running").count() == WORKLOADS
    });
    for i in 0..WORKLOADS {
        let arg = (100_000 + i).to_string();
        let found = processes(&["/bin/sleep", &arg]);
        assert_eq!(found.len(), 1, "workload w{i:02} runs {} times: {found:?}", found.len());
    }
    assert_eq!(d.terminate(), 0);
    for i in 0..WORKLOADS {
        let arg = (100_000 + i).to_string();
        assert!(processes(&["/bin/sleep", &arg]).is_empty(), "w{i:02} outlived the daemon's stop");
    }
}

/// A small deterministic generator (no dependency, same rounds every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 50 rounds (`PADDOCK_KILL_ROUNDS`; bench/soak.sh runs 1000) of: a
/// change to the workloads (a file created, edited or removed), a SIGKILL
/// of the daemon at a random moment, a new daemon.
/// Untouched workloads keep their pids throughout; no workload ever runs
/// twice, nothing removed runs on, slices never move, an exit that
/// happened while no daemon ran is seen with its status, and a workload
/// that counts into its log loses no line and repeats none.
#[test]
fn daemon_kills_amid_changes_lose_nothing_and_duplicate_nothing() {
    let rounds: u32 =
        std::env::var("PADDOCK_KILL_ROUNDS").map_or(50, |r| r.parse().expect("PADDOCK_KILL_ROUNDS: a number"));
    let mut d = Daemon::setup();
    d.write(
        "count.toml",
        "command = [\"/bin/sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo $i; sleep 0.005; done\"]\n",
    );
    d = d.start(&[]);
    let counter = d.running_pid("count");
    let slice = d.workload("count").unwrap()["uid_map"].clone();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // pool workload -> the argument its sleep runs with (None: no file).
    let mut pool: Vec<Option<u64>> = vec![None; 6];
    let mut arg = 300_000;
    for round in 0..rounds {
        let i = rng.next(pool.len() as u64) as usize;
        let name = format!("p{i}");
        match (pool[i], rng.next(3)) {
            (Some(_), 0) => {
                std::fs::remove_file(d.path(&format!("wl/{name}.toml"))).unwrap();
                pool[i] = None;
            }
            _ => {
                arg += 1;
                d.write(&format!("{name}.toml"), &format!("command = [\"/bin/sleep\", \"{arg}\"]\n"));
                pool[i] = Some(arg);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.next(60)));
        d.kill();
        d = d.start(&[]);
        d.wait_for(&format!("round {round} to converge"), |d| {
            let status = d.status();
            pool.iter().enumerate().all(|(i, a)| {
                let w = status.iter().find(|w| w["name"] == format!("p{i}"));
                match a {
                    Some(_) => w.is_some_and(|w| w["state"] == "running"),
                    None => w.is_none(),
                }
            })
        });
        assert_eq!(d.running_pid("count"), counter, "round {round}: the untouched workload was restarted");
        assert_eq!(d.workload("count").unwrap()["uid_map"], slice, "round {round}: its slice moved");
        // Each version of each workload: running exactly once if current, else not at all.
        for version in 300_001..=arg {
            let found = own_processes(&d, &["/bin/sleep", &version.to_string()]).len();
            let want = usize::from(pool.contains(&Some(version)));
            assert_eq!(found, want, "round {round}: `sleep {version}` runs {found} times");
        }
    }
    // The counter's log: every number once, in order, across every daemon death.
    std::thread::sleep(Duration::from_millis(50));
    let log = std::fs::read_to_string(d.path("state/logs/count.log")).unwrap();
    let numbers: Vec<u64> = log.lines().filter_map(|l| l.split_once(' ')?.1.parse().ok()).collect();
    assert!(numbers.len() > 200, "{} lines", numbers.len());
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a line lost or repeated around {}", pair[0]);
    }
    assert_eq!(d.terminate(), 0);
}

/// A workload that ends while no daemon runs is seen when one comes back,
/// with its real exit status; a one-shot runs once per manifest version,
/// however often the daemon restarts.
#[test]
fn an_end_while_no_daemon_runs_is_heard_and_a_one_shot_runs_once_per_version() {
    let mut d = Daemon::setup().start(&[]);
    d.write("brief.toml", "command = [\"/bin/sh\", \"-c\", \"sleep 1; exit 7\"]\n[restart]\npolicy = \"never\"\n");
    let once = counting_one_shot(&d);
    d.write("once.toml", &once);
    d.running_pid("brief");
    d.kill();
    // brief ends (exit 7) with no daemon to hear it.
    std::thread::sleep(Duration::from_millis(1500));
    d = d.start(&[]);
    d.wait_for("brief's end heard", |d| d.workload("brief").is_some_and(|w| w["state"] == "exited"));
    assert_eq!(d.workload("brief").unwrap()["last_exit"], 7);
    // Three more daemon restarts (clean and killed): once ran once.
    for kill in [false, true, false] {
        if kill {
            d.kill();
        } else {
            assert_eq!(d.terminate(), 0);
        }
        d = d.start(&[]);
        d.wait_for("once seen as exited", |d| d.workload("once").is_some_and(|w| w["state"] == "exited"));
    }
    assert_eq!(std::fs::read_to_string(d.path("out/runs")).unwrap(), "run\n", "ran once for one version");
    // A change (a comment alone would read as the same manifest).
    d.write("once.toml", &format!("hostname = \"v2\"\n{once}"));
    d.wait_for("once's second version to run", |d| {
        std::fs::read_to_string(d.path("out/runs")).unwrap() == "run\nrun\n"
    });
    assert_eq!(d.terminate(), 0);
}

/// An edit after which the file reads as the same manifest (comments,
/// spacing, key order, quoting, a default written out) restarts nothing,
/// releases no hold and runs no finished one-shot again; the sandbox's
/// record takes the new text, so a daemon that dies and comes back adopts
/// the run as the file's version. A real change still restarts.
#[test]
fn an_edit_that_reads_the_same_restarts_nothing_across_a_daemon_crash_too() {
    let mut d = Daemon::setup().start(&[]);
    let once = counting_one_shot(&d);
    d.write("once.toml", &once);
    d.write("web.toml", "command = [\"/bin/sleep\", \"1000\"]\nhostname = \"web\"\n");
    d.write("held.toml", SLEEPER);
    d.wait_for("once to run", |d| d.workload("once").is_some_and(|w| w["state"] == "exited"));
    let web = d.running_pid("web");
    d.running_pid("held");
    let out = d.paddock(&["stop", "held"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_for("held stopped", |d| d.workload("held").is_some_and(|w| w["state"] == "stopped"));

    // Comments, spacing, key order, quoting, a default written out.
    let reworded =
        "# the web server\nhostname = 'web'   # its name\n\ncommand = [ \"/bin/sleep\",\n  \"1000\" ]\nuser = 0\n";
    d.write("web.toml", reworded);
    d.write("once.toml", &format!("# reworded\n{once}"));
    d.write("held.toml", &format!("{SLEEPER}\n# still held\n"));
    let log = d.path("out/daemon.log");
    let said = |name: &str| {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .any(|l| l.contains("manifest edited, the same once read") && l.contains(&format!("workload={name}")))
    };
    d.wait_for("the three edits seen", |_| said("web") && said("once") && said("held"));
    std::thread::sleep(Duration::from_millis(300));
    let w = d.workload("web").unwrap();
    assert_eq!((&w["state"], w["pid"].as_i64()), (&serde_json::Value::from("running"), Some(web)), "{w}");
    assert_eq!(d.workload("held").unwrap()["state"], "stopped");
    assert_eq!(d.workload("once").unwrap()["state"], "exited");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path("state/sandboxes/web.json")).unwrap()).unwrap();
    assert_eq!(record["source"], reworded, "the record takes the file's new text");

    // A daemon that dies and comes back adopts the run, as the file's version.
    d.kill();
    d = d.start(&[]);
    d.wait_for("web adopted", |d| d.workload("web").is_some_and(|w| w["state"] == "running"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.workload("web").unwrap()["pid"].as_i64(), Some(web), "adopted, not restarted");
    assert_eq!(d.workload("held").unwrap()["state"], "stopped");
    assert_eq!(d.workload("once").unwrap()["state"], "exited");
    assert_eq!(std::fs::read_to_string(d.path("out/runs")).unwrap(), "run\n", "the one-shot ran once");
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("starting workload=web").count(), 0, "the new daemon's log: {log}");

    // A change restarts.
    d.write("web.toml", "command = [\"/bin/sleep\", \"1000\"]\nhostname = \"web2\"\n");
    d.wait_for("web restarted", |d| d.workload("web").is_some_and(|w| w["state"] == "running" && w["pid"] != web));
    assert_eq!(d.terminate(), 0);
}

/// An edit whose restart waits (for what it comes `after`), reverted with
/// a comment left: the file reads as what runs, which runs on once the
/// wait would have ended, its record taking the file's text.
#[test]
fn an_edit_that_waits_reverted_in_other_words_restarts_nothing() {
    let mut d = Daemon::setup().start(&[]);
    let web = "command = [\"/bin/sleep\", \"1000\"]\n";
    d.write("web.toml", web);
    let pid = d.running_pid("web");
    d.write("web.toml", &format!("{web}after = [\"db\"]\n"));
    d.wait_for("web's edit to wait for db", |d| {
        d.workload("web").is_some_and(|w| w["waiting_for"][0] == "db (no manifest defines it)")
    });
    let reverted = format!("# waited for db once\n{web}");
    d.write("web.toml", &reverted);
    d.wait_for("web to wait no more", |d| {
        d.workload("web").is_some_and(|w| w["waiting_for"].as_array().is_none_or(|a| a.is_empty()))
    });
    d.write("db.toml", "command = [\"/bin/sleep\", \"1001\"]\n");
    d.running_pid("db");
    std::thread::sleep(Duration::from_millis(500));
    let w = d.workload("web").unwrap();
    assert_eq!((&w["state"], w["pid"].as_i64()), (&serde_json::Value::from("running"), Some(pid)), "{w}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path("state/sandboxes/web.json")).unwrap()).unwrap();
    assert_eq!(record["source"], reverted.as_str(), "the record takes the file's text");
    assert_eq!(d.terminate(), 0);
}

/// A hold and a one-shot's end are kept with what their manifest reads
/// as: after an invalid edit, a daemon that dies and comes back never
/// read the text they were kept at, and the file put back in other words
/// then keeps the hold and runs nothing again, as it would have had the
/// daemon not died (helper-128: it started the held one and ran the
/// one-shot again). So does an edit that reads the same made while no
/// daemon ran.
#[test]
fn a_hold_and_an_end_survive_an_invalid_edit_a_crash_and_the_file_put_back_in_other_words() {
    let mut d = Daemon::setup().start(&[]);
    let once = counting_one_shot(&d);
    d.write("once.toml", &once);
    d.write("held.toml", SLEEPER);
    d.wait_for("once to run", |d| d.workload("once").is_some_and(|w| w["state"] == "exited"));
    d.running_pid("held");
    let stopped = d.paddock(&["stop", "held"]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    d.wait_for("held stopped", |d| d.workload("held").is_some_and(|w| w["state"] == "stopped"));

    d.write("once.toml", "command = \"not a list\"\n");
    d.write("held.toml", "command = \"not a list\"\n");
    wait_invalid(&d, "once");
    wait_invalid(&d, "held");
    d.kill();
    d = d.start(&[]);
    wait_invalid(&d, "once");
    wait_invalid(&d, "held");
    // Put back in other words.
    d.write("once.toml", &format!("# put back\n{once}"));
    d.write("held.toml", &format!("# put back\n{SLEEPER}user = 0\n"));
    d.wait_for("both files valid again", |d| {
        ["once", "held"].iter().all(|n| d.workload(n).is_some_and(|w| w["error"].is_null()))
    });
    std::thread::sleep(Duration::from_millis(500));
    let states = |d: &Daemon| ["once", "held"].map(|n| d.workload(n).unwrap()["state"].as_str().unwrap().to_owned());
    assert_eq!(states(&d), ["exited", "stopped"]);
    assert_eq!(d.workload("held").unwrap()["held"], true);
    assert_eq!(std::fs::read_to_string(d.path("out/runs")).unwrap(), "run\n", "the one-shot ran once");

    // Reworded again while no daemon runs.
    d.kill();
    d.write("once.toml", &format!("{once}# while no daemon ran\n"));
    d.write("held.toml", &format!("{SLEEPER}# while no daemon ran\n"));
    d = d.start(&[]);
    d.wait_for("both seen", |d| ["once", "held"].iter().all(|n| d.workload(n).is_some()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(states(&d), ["exited", "stopped"]);
    assert_eq!(std::fs::read_to_string(d.path("out/runs")).unwrap(), "run\n", "the one-shot ran once");

    // A change still runs them.
    d.write("held.toml", &format!("{SLEEPER}hostname = \"h2\"\n"));
    d.running_pid("held");
    assert_eq!(d.terminate(), 0);
}

/// A one-shot that appends a line to `out/runs` at each run (the file
/// made here, writable by the sandbox's root, an unprivileged host uid):
/// its manifest's text.
fn counting_one_shot(d: &Daemon) -> String {
    std::fs::write(d.path("out/runs"), "").unwrap();
    std::fs::set_permissions(d.path("out/runs"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    format!(
        "command = [\"/bin/sh\", \"-c\", \"echo run >> /out/runs\"]\n[restart]\npolicy = \"never\"\n[[mounts]]\nsource = {:?}\ntarget = \"/out\"\nreadonly = false\n",
        d.path("out").display().to_string()
    )
}

/// Records a crash may leave: torn, stale (its pid reused by another
/// program), or naming a sandbox that is gone. None of them costs an
/// innocent process its life, and each is cleaned up.
#[test]
fn torn_stale_and_dead_records_harm_no_one_and_are_cleaned_up() {
    let d = Daemon::setup();
    std::fs::create_dir_all(d.path("state/sandboxes")).unwrap();
    let slice = r#"{"uid": {"start": 100000, "count": 65536}, "gid": {"start": 100000, "count": 65536}}"#;
    // Stale: a live process that is no sandbox, at the pid a record names.
    let mut innocent = std::process::Command::new("sleep").arg("1000").spawn().unwrap();
    let stale = format!(r#"{{"pid": {}, "start_time": 1, "cgroup": [], "slice": {slice}}}"#, innocent.id());
    std::fs::write(d.path("state/sandboxes/stale.json"), stale).unwrap();
    // Gone: a pid that is not running, whose record names a cgroup outside
    // paddock's own (its name shares their prefix as text), holding a
    // process of its own. Neither may be touched.
    let outside = outside_cgroup();
    let mut bystander = std::process::Command::new("sleep").arg("1000").spawn().unwrap();
    std::fs::write(outside.join("cgroup.procs"), bystander.id().to_string()).unwrap();
    let gone = format!(
        r#"{{"pid": {}, "start_time": 1, "cgroup": [{:?}], "slice": {slice}}}"#,
        i32::MAX - 1,
        outside.display().to_string()
    );
    std::fs::write(d.path("state/sandboxes/dead.json"), gone).unwrap();
    // Torn: half a record.
    std::fs::write(d.path("state/sandboxes/torn.json"), r#"{"pid": 12"#).unwrap();
    d.write("torn.toml", SLEEPER);
    let d = d.start(&[]);
    d.running_pid("torn");
    assert!(innocent.try_wait().unwrap().is_none(), "a process at a stale record's pid was killed");
    for file in ["stale.json", "dead.json"] {
        assert!(!d.path(&format!("state/sandboxes/{file}")).exists(), "{file} is cleaned up");
    }
    // The record naming a cgroup outside paddock's own was not followed.
    assert!(outside.exists(), "a cgroup outside paddock's was removed");
    assert!(bystander.try_wait().unwrap().is_none(), "a process in a cgroup outside paddock's was killed");
    for mut p in [innocent, bystander] {
        let _ = p.kill();
        let _ = p.wait();
    }
    let _ = std::fs::remove_dir(&outside);
}

/// A record whose cgroup cannot be read (here its cgroup.procs is a
/// directory, standing for a host out of descriptors or memory) is not
/// taken for one whose init is gone: recovery looks again, and goes on
/// once it can tell.
#[test]
fn a_record_that_cannot_be_read_for_a_moment_is_looked_at_again_not_forgotten() {
    let d = Daemon::setup();
    std::fs::create_dir_all(d.path("state/sandboxes")).unwrap();
    let slice = r#"{"uid": {"start": 100000, "count": 65536}, "gid": {"start": 100000, "count": 65536}}"#;
    let cgroup = d.path("out/cgroup");
    std::fs::create_dir_all(cgroup.join("cgroup.procs")).unwrap();
    let other = Bystander::start();
    let record = format!(
        r#"{{"pid": {}, "start_time": {}, "cgroup": [{:?}], "slice": {slice}}}"#,
        other.pid(),
        other.start_time(),
        cgroup.display().to_string()
    );
    std::fs::write(d.path("state/sandboxes/doubt.json"), record).unwrap();
    let readable = cgroup.clone();
    let mend = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::remove_dir(readable.join("cgroup.procs")).unwrap();
        std::fs::write(readable.join("cgroup.procs"), "").unwrap();
    });
    let mut d = d.start(&[]);
    mend.join().unwrap();
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(
        log.contains("cannot tell whether a predecessor's sandboxes still run; looking again")
            && log.contains("doubt: its cgroup"),
        "{log}"
    );
    // Readable again: its init is not in it, so the record names no one.
    assert!(!d.path("state/sandboxes/doubt.json").exists());
    assert!(other.alive(), "the process at its pid is left alone");
    assert_eq!(d.terminate(), 0);
}

/// A daemon that cannot read what its predecessor kept looks again (for
/// half a minute) rather than exit or start what may run already, and
/// adopts the running sandbox once it can: the recovery's own loop, in
/// real starts. First out of descriptors (the limit that gets a start
/// that far, past the lock and the runtime and short of the kept files,
/// is looked for: a lower one ends the start, a higher one gets past);
/// this VM's root cannot raise a hard limit (no CAP_SYS_RESOURCE), so the
/// way on is shown with a cause a test can end: the networks' records a
/// file, not a directory.
#[test]
fn a_daemon_that_cannot_read_the_kept_state_looks_again_and_then_adopts() {
    let mut d = Daemon::setup().start(&[]);
    d.write("w.toml", SLEEPER);
    let pid = d.running_pid("w");
    let sleepers = |d: &Daemon| own_processes(d, &["/bin/sleep", "1000"]);
    let sleeper = sleepers(&d);
    assert_eq!(sleeper.len(), 1);
    d.kill();
    let log = |d: &Daemon| std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default();
    let waited = |d: &mut Daemon, said: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log(d).contains(said)
            && d.child.as_mut().unwrap().try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        log(d).contains(said)
    };
    let mut limit = None;
    for n in 6..=32 {
        (d.nofile_soft, d.nofile_hard) = (Some(n), Some(n));
        d = d.launch(&[], &[]);
        if waited(&mut d, "cannot read what a predecessor kept; looking again in 1s") {
            limit = Some(n);
            break;
        }
        // Ended, or past it: killed (its workloads run on).
        d.kill();
    }
    assert!(limit.is_some(), "no limit made the start wait for the kept state: {}", log(&d));
    assert!(waited(&mut d, "looking again in 2s"), "it did not look again: {}", log(&d));
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "it gave up: {}", log(&d));
    assert_eq!(sleepers(&d), sleeper, "nothing started meanwhile, nothing stopped");
    d.kill();

    (d.nofile_soft, d.nofile_hard) = (None, None);
    std::fs::write(d.path("state/networks"), "").unwrap();
    d = d.launch(&[], &[]);
    assert!(waited(&mut d, "cannot read what a predecessor kept; looking again in 1s"), "{}", log(&d));
    std::fs::remove_file(d.path("state/networks")).unwrap();
    std::fs::create_dir(d.path("state/networks")).unwrap();
    d.wait_for("the control socket", |d| common::daemon::ask_status(d, Duration::from_millis(500)).is_ok());
    assert_eq!(d.running_pid("w"), pid, "the sandbox is adopted, not started again: {}", log(&d));
    assert_eq!(sleepers(&d), sleeper);
    let code = d.terminate();
    assert_eq!(code, 0, "{}", log(&d));
}

/// A daemon killed during its own stop (after the stop signal went, its
/// workload's trap still running) leaves a workload that would not be
/// restarted (`never`; an exit 0 on the signal) to be started again by
/// the next daemon, not taken for done.
#[test]
fn a_daemon_killed_during_its_own_stop_leaves_its_workloads_to_start_again() {
    let mut d = Daemon::setup().start(&[]);
    let script = "trap 'sleep 1.417; exit 0' TERM; while :; do sleep 0.1; done";
    d.write("oneshot.toml", &format!("command = [\"/bin/sh\", \"-c\", {script:?}]\n[restart]\npolicy = \"never\"\n"));
    let first = d.running_pid("oneshot");
    let shell = |d: &Daemon| own_processes(d, &["/bin/sh", "-c", script]);
    d.wait_for("its shell", |d| !shell(d).is_empty());
    let daemon = d.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    // Killed once the workload took the signal (its trap runs).
    d.wait_for("the stop signal taken", |_| !processes(&["sleep", "1.417"]).is_empty());
    d.kill();
    // Its workload ends (exit 0) while no daemon runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !shell(&d).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the workload did not end on its stop signal");
        std::thread::sleep(Duration::from_millis(20));
    }
    d = d.start(&[]);
    let second = d.running_pid("oneshot");
    assert_ne!(second, first);
    let w = d.workload("oneshot").unwrap();
    assert_eq!(w["restarts"], 0, "no restart counted: {w}");
    assert_eq!(d.terminate(), 0);
}

/// Pids and start times (clock ticks after boot) begin again at each
/// boot, so after a reboot another process can have a record's pid and
/// start time both. A record of an earlier boot, or one (from a paddock
/// that did not record the boot) whose init is not in the cgroup it names,
/// is forgotten: the process that matches it now is left alone, and the
/// workload starts anew.
#[test]
fn a_record_of_an_earlier_boot_names_no_one_even_when_its_pid_and_start_time_match() {
    let d = Daemon::setup();
    std::fs::create_dir_all(d.path("state/sandboxes")).unwrap();
    let slice = r#"{"uid": {"start": 100000, "count": 65536}, "gid": {"start": 100000, "count": 65536}}"#;
    let past = Bystander::start();
    let record = format!(
        r#"{{"pid": {}, "start_time": {}, "cgroup": [], "boot": "00000000-0000-4000-8000-000000000000", "slice": {slice}}}"#,
        past.pid(),
        past.start_time()
    );
    std::fs::write(d.path("state/sandboxes/past.json"), record).unwrap();
    d.write("past.toml", SLEEPER);
    // No boot, and a cgroup that is gone (as every cgroup is after a reboot).
    let legacy = Bystander::start();
    let record = format!(
        r#"{{"pid": {}, "start_time": {}, "cgroup": ["/sys/fs/cgroup/paddock-gone-{}"], "slice": {slice}}}"#,
        legacy.pid(),
        legacy.start_time(),
        std::process::id()
    );
    std::fs::write(d.path("state/sandboxes/legacy.json"), record).unwrap();
    d.write("legacy.toml", SLEEPER);
    let mut d = d.start(&[]);
    let now = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    for (name, bystander) in [("past", &past), ("legacy", &legacy)] {
        let pid = d.running_pid(name);
        assert_ne!(pid, i64::from(bystander.pid()), "{name}: the process matching its record was adopted");
        assert!(bystander.alive(), "{name}: the process matching its record was killed");
        // The new record names this boot.
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path(&format!("state/sandboxes/{name}.json"))).unwrap()).unwrap();
        assert_eq!(record["boot"], now.trim(), "{record}");
    }
    assert_eq!(d.terminate(), 0);
}

/// A `sleep` that is no sandbox, killed when dropped.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Self {
        Bystander(std::process::Command::new("sleep").arg("1000").spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its start time, in clock ticks after boot (`/proc/PID/stat`).
    fn start_time(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
    }

    fn alive(&self) -> bool {
        // Its parent is this test: not reaped, so a dead one is a zombie.
        !common::daemon::gone(i64::from(self.pid()))
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A sandbox recorded by a paddock that did not record the boot is
/// adopted as before, and its record gains the boot.
#[test]
fn a_record_without_a_boot_is_adopted_and_gains_it() {
    let mut d = Daemon::setup().start(&[]);
    d.write("old.toml", SLEEPER);
    let pid = d.running_pid("old");
    d.kill();
    assert!(strip_record(&d, "old", "boot").is_some(), "a record names its boot");
    d = d.start(&[]);
    assert_eq!(d.running_pid("old"), pid, "adopted");
    let record = record_of(&d, "old");
    let now = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(record["boot"], now.trim(), "{record}");
    assert_eq!(d.terminate(), 0);
}

/// An adopted sandbox's uptime goes on from its start by the boot clock:
/// a wall clock stepped since (NTP at boot, a host whose RTC was wrong)
/// made it decades, or nothing (helper-102).
#[test]
fn an_adopted_sandboxs_uptime_is_not_moved_by_a_step_of_the_wall_clock() {
    let mut d = Daemon::setup().start(&[]);
    d.write("steady.toml", SLEEPER);
    let pid = d.running_pid("steady");
    std::thread::sleep(Duration::from_millis(1100));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Started, as the wall clock had it, in 1970, and then a day from now.
    for started in [100, now + 86_400] {
        d.kill();
        let mut record = record_of(&d, "steady");
        record["started"] = serde_json::json!({"secs_since_epoch": started, "nanos_since_epoch": 0});
        std::fs::write(d.path("state/sandboxes/steady.json"), serde_json::to_vec(&record).unwrap()).unwrap();
        d = d.start(&[]);
        assert_eq!(d.running_pid("steady"), pid, "adopted");
        let uptime = d.workload("steady").unwrap()["uptime_seconds"].as_u64().unwrap();
        assert!((1..600).contains(&uptime), "started {started}: uptime {uptime} s");
    }
    assert_eq!(d.terminate(), 0);
}

/// A cgroup beside paddock's (`paddock-outside-PID` next to `paddock`), on
/// the v2 tree when the host has one with controllers, else in the v1
/// pids hierarchy.
fn outside_cgroup() -> std::path::PathBuf {
    let name = format!("paddock-outside-{}", std::process::id());
    let v2 = std::path::Path::new("/sys/fs/cgroup");
    let parent = if v2.join("cgroup.subtree_control").exists() { v2.to_path_buf() } else { v2.join("pids") };
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot make the test's cgroup {}: {e}", dir.display()));
    dir
}

/// Ends that came while no daemon ran are judged by the restart policy
/// when the next daemon hears them, exit codes and signals alike.
#[test]
fn ends_while_no_daemon_runs_get_their_restart_policy_and_their_real_status() {
    let mut d = Daemon::setup().start(&[]);
    d.write("flaky.toml", "command = [\"/bin/sh\", \"-c\", \"sleep 1; exit 3\"]\n[restart]\nbackoff = \"0s\"\n");
    d.write("victim.toml", "command = [\"/bin/sleep\", \"1000\"]\n[restart]\nbackoff = \"0s\"\n");
    d.running_pid("flaky");
    let victim = d.running_pid("victim");
    d.kill();
    // With no daemon: flaky exits 3 on its own, victim's command (the
    // init's child; the init stays to keep its end) is killed.
    kill_command_of(victim);
    std::thread::sleep(Duration::from_millis(1500));
    d = d.start(&[]);
    for (name, exit) in [("flaky", serde_json::json!(3)), ("victim", serde_json::json!("SIGKILL"))] {
        d.wait_for(&format!("{name} restarted after its end"), |d| {
            d.workload(name).is_some_and(|w| w["restarts"].as_u64() >= Some(1) && w["last_exit"] == exit)
        });
    }
    assert_ne!(d.running_pid("victim"), victim, "a new run");
    assert_eq!(d.terminate(), 0);
}

/// A daemon running `flaky`, which fails after `seconds` with
/// `max_retries`, once it runs a second time (one failure, one restart).
fn flaky_in_its_second_run(seconds: u32, max_retries: u32) -> Daemon {
    let d = Daemon::setup().start(&[]);
    d.write(
        "flaky.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"sleep {seconds}; exit 3\"]\n[restart]\nmax_retries = {max_retries}\nbackoff = \"0s\"\n"
        ),
    );
    d.wait_for("flaky's second run", |d| {
        d.workload("flaky").is_some_and(|w| w["state"] == "running" && w["restarts"] == 1)
    });
    d
}

/// A killed daemon's successor goes on counting a workload's failures and
/// restarts (kept beside its hold): `max_retries` gives up as if the
/// daemon had never gone, and `restarts` does not drop to 0. It shows the
/// running workload's LAST EXIT (how the run before ended) as before.
#[test]
fn a_killed_daemons_successor_goes_on_counting_failures_and_restarts() {
    let mut d = flaky_in_its_second_run(2, 2);
    // Written behind the restart, within milliseconds.
    d.wait_for("flaky's count kept", |d| {
        std::fs::read_to_string(d.path("state/workloads/flaky.json")).is_ok_and(|t| t.contains("\"restarts\": 1"))
    });
    let pid = d.running_pid("flaky");
    d.kill();
    d = d.start(&[]);
    let w = d.workload("flaky").unwrap();
    assert_eq!((&w["state"], &w["restarts"]), (&serde_json::json!("running"), &serde_json::json!(1)), "{w}");
    assert_eq!((w["pid"].as_i64(), &w["last_exit"]), (Some(pid), &serde_json::json!(3)), "adopted: {w}");
    // Its second failure restarts it once more; its third gives up.
    d.wait_for("flaky gave up", |d| d.workload("flaky").is_some_and(|w| w["state"] == "failed"));
    assert_eq!(d.workload("flaky").unwrap()["restarts"], 2);
    assert_eq!(d.terminate(), 0);
}

/// A killed daemon's successor waits out what is left of a restart delay
/// (a crash-looping daemon, or each upgrade, started every workload in a
/// backoff at once), then restarts it as the first would have, its count
/// going on (helper-102).
#[test]
fn a_killed_daemons_successor_waits_out_what_is_left_of_a_restart_delay() {
    let mut d = Daemon::setup().start(&[]);
    d.write(
        "flaky.toml",
        "command = [\"/bin/sh\", \"-c\", \"exit 3\"]\n[restart]\nbackoff = \"4s\"\nbackoff_max = \"4s\"\n",
    );
    // One whose start fails: why is shown while it waits, after too.
    d.write("lost.toml", "command = [\"/no/such/thing\"]\n[restart]\nbackoff = \"4s\"\nbackoff_max = \"4s\"\n");
    d.wait_for("both delays kept", |d| {
        ["flaky", "lost"].iter().all(|n| {
            d.workload(n).is_some_and(|w| w["state"] == "backoff")
                && std::fs::read_to_string(d.path(&format!("state/workloads/{n}.json")))
                    .is_ok_and(|t| t.contains("until_ms"))
        })
    });
    let failed = std::time::Instant::now();
    d.kill();
    d = d.start(&[]);
    std::thread::sleep(Duration::from_millis(1500));
    let w = d.workload("flaky").unwrap();
    assert_eq!((&w["state"], &w["restarts"]), (&serde_json::json!("backoff"), &serde_json::json!(0)), "{w}");
    assert_eq!(w["last_exit"], 3, "how the run it waits after ended is still shown: {w}");
    let lost = d.workload("lost").unwrap();
    assert_eq!(lost["state"], "backoff", "{lost}");
    assert!(lost["error"].as_str().is_some_and(|e| e.contains("cannot execute /no/such/thing")), "{lost}");
    d.wait_for("flaky restarted", |d| d.workload("flaky").is_some_and(|w| w["restarts"].as_u64() >= Some(1)));
    let waited = failed.elapsed();
    assert!(waited >= Duration::from_millis(3500), "restarted {waited:?} after its failure, within its 4 s delay");
    assert_eq!(d.terminate(), 0);
}

/// A run that ended while no daemon ran lasted until its end, not until
/// the next daemon heard of it: past `reset_after` that would have
/// dropped the failure before it, and `max_retries` would have let it run
/// once more than it may (helper-101). And its restart delay ran from its
/// end: the next daemon restarts it at once once that is over.
#[test]
fn a_run_that_ended_while_no_daemon_ran_counts_as_long_as_it_ran() {
    let d = Daemon::setup();
    std::fs::write(d.path("out/runs"), "").unwrap();
    // Writable by the sandbox's root, an unprivileged host uid.
    std::fs::set_permissions(d.path("out/runs"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mounts = format!(
        "[[mounts]]\nsource = {:?}\ntarget = \"/out\"\nreadonly = false\n",
        d.path("out").display().to_string()
    );
    // Its first run fails at once; its second after a second, while no daemon runs.
    let script = "echo run >> /out/runs; [ $(wc -l < /out/runs) -ge 2 ] && sleep 1; exit 3";
    d.write(
        "flaky.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {script:?}]\n[restart]\npolicy = \"on-failure\"\nmax_retries = 1\nbackoff = \"0s\"\nreset_after = \"3s\"\n{mounts}"
        ),
    );
    // Ends after a second, then waits 2 s to be restarted.
    d.write(
        "later.toml",
        "command = [\"/bin/sh\", \"-c\", \"sleep 1; exit 3\"]\n[restart]\nbackoff = \"2s\"\nbackoff_max = \"2s\"\n",
    );
    let mut d = d.start(&[]);
    d.wait_for("flaky's second run, its count kept", |d| {
        d.workload("flaky").is_some_and(|w| w["state"] == "running" && w["restarts"] == 1)
            && std::fs::read_to_string(d.path("state/workloads/flaky.json"))
                .is_ok_and(|t| t.contains("\"restarts\": 1"))
    });
    d.running_pid("later");
    d.kill();
    // Both end after their second; the next daemon comes 4 s later.
    std::thread::sleep(Duration::from_secs(4));
    d = d.start(&[]);
    let back = std::time::Instant::now();
    d.wait_for("later restarted", |d| d.workload("later").is_some_and(|w| w["restarts"] == 1));
    assert!(back.elapsed() < Duration::from_millis(1500), "its delay ended while no daemon ran: {:?}", back.elapsed());
    d.wait_for("flaky gave up", |d| d.workload("flaky").is_some_and(|w| w["state"] == "failed"));
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let first = log.lines().find(|l| l.contains("exited") && l.contains("flaky")).unwrap();
    assert!(first.contains("ran_for=\"1."), "{first}");
    assert_eq!(d.workload("flaky").unwrap()["restarts"], 1, "max_retries = 1: its second failure in a row gave up");
    assert_eq!(std::fs::read_to_string(d.path("out/runs")).unwrap(), "run\nrun\n");
    assert_eq!(d.terminate(), 0);
}

/// A daemon stopped cleanly (`systemctl stop`, a reboot) stops its
/// workloads; its successor starts each again from no failures, and that
/// start is no restart: `restarts` is shown as it was.
#[test]
fn a_stopped_daemons_successor_starts_workloads_again_from_no_failures() {
    let mut d = flaky_in_its_second_run(1, 1);
    assert_eq!(d.terminate(), 0);
    let kept = std::fs::read_to_string(d.path("state/workloads/flaky.json")).unwrap();
    assert!(kept.contains("\"halted\": true") && kept.contains("\"failures\": 0"), "{kept}");
    d = d.start(&[]);
    let w = d.workload("flaky").unwrap();
    assert_eq!((&w["state"], &w["restarts"]), (&serde_json::json!("running"), &serde_json::json!(1)), "{w}");
    // max_retries = 1: with its failure carried, the next would give up;
    // none carried, the next is retried once more.
    d.wait_for("flaky restarted after its first failure", |d| {
        d.workload("flaky").is_some_and(|w| w["state"] == "running" && w["restarts"] == 2)
    });
    d.wait_for("flaky gave up after its second", |d| d.workload("flaky").is_some_and(|w| w["state"] == "failed"));
    assert_eq!(d.terminate(), 0);
}

/// Kills the command of the sandbox whose init is `init` (the init's child).
fn kill_command_of(init: i64) {
    let command: i32 = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("the init has its command as a child")
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(command), nix::sys::signal::SIGKILL).unwrap();
}

/// A bad edit made while no daemon ran (before an upgrade's exec, after a
/// crash) does not take down the version that runs: the next daemon runs
/// it on with the manifest its sandbox was started from (kept in the
/// sandbox's record), restarts it by that manifest when it ends, takes it
/// over when the file is valid again and stops it when the file is removed.
#[test]
fn a_bad_edit_found_by_the_next_daemon_leaves_the_running_version_running() {
    let steady = "command = [\"/bin/sleep\", \"1000\"]\n[restart]\nbackoff = \"0s\"\n";
    let mut d = Daemon::setup().start(&[]);
    d.write("steady.toml", steady);
    let pid = d.running_pid("steady");
    d.kill();
    d.write("steady.toml", "command = \"not a list\"\n");
    let d = d.start(&[]);
    wait_invalid(&d, "steady");
    std::thread::sleep(Duration::from_millis(300));
    let w = d.workload("steady").unwrap();
    assert_eq!((&w["state"], &w["pid"]), (&serde_json::json!("running"), &serde_json::json!(pid)), "{w}");
    // Its end: restarted by the manifest it runs.
    kill_command_of(pid);
    d.wait_for("steady restarted", |d| {
        d.workload("steady").is_some_and(|w| w["state"] == "running" && w["restarts"] == 1 && w["pid"] != pid)
    });
    let restarted = d.running_pid("steady");
    // The version it runs, valid again: taken over, not restarted.
    d.write("steady.toml", steady);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.running_pid("steady"), restarted);
    assert_eq!(d.workload("steady").unwrap()["restarts"], 1);
    // Removed: stopped.
    std::fs::remove_file(d.path("wl/steady.toml")).unwrap();
    d.wait_for("steady stopped", |d| d.workload("steady").is_none());
}

/// A mount source its start would refuse now (its directory made 0700
/// while the workload ran) makes the file invalid to the next daemon, but
/// not the manifest the sandbox was started from, whose mounts are made:
/// the version that runs runs on, its next start to say why it cannot.
#[test]
fn a_mount_source_refused_since_the_start_does_not_stop_the_adopted_sandbox() {
    let mut d = Daemon::setup().start(&[]);
    std::fs::create_dir_all(d.path("shared/data")).unwrap();
    let source = d.path("shared/data").display().to_string();
    d.write("app.toml", &format!("{SLEEPER}[[mounts]]\nsource = {source:?}\ntarget = \"/mnt\"\n"));
    let pid = d.running_pid("app");
    d.kill();
    std::fs::set_permissions(d.path("shared"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let d = d.start(&[]);
    d.wait_for("app's file seen invalid", |d| {
        d.workload("app").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("others may not enter")))
    });
    std::thread::sleep(Duration::from_millis(300));
    let w = d.workload("app").unwrap();
    assert_eq!((&w["state"], &w["pid"]), (&serde_json::json!("running"), &serde_json::json!(pid)), "{w}");
}

/// A manifest edited (still valid) or removed while no daemon ran: the
/// next daemon stops the adopted sandbox as the version it runs says, with
/// its stop signal and timeout (here SIGINT, the only one it heeds), not
/// SIGTERM and the default 10 s.
#[test]
fn an_adopted_sandbox_whose_file_changed_meanwhile_is_stopped_with_its_own_stop_signal() {
    let heeds_int = "command = [\"/bin/sh\", \"-c\", \"trap 'exit 0' INT; trap '' TERM; while :; do sleep 0.1; done\"]\n\
                     [stop]\nsignal = \"SIGINT\"\ntimeout = \"60s\"\n";
    let mut d = Daemon::setup().start(&[]);
    d.write("edited.toml", heeds_int);
    d.write("removed.toml", heeds_int);
    let (edited, removed) = (d.running_pid("edited"), d.running_pid("removed"));
    d.kill();
    d.write("edited.toml", &format!("{heeds_int}[env]\nEDITED = \"1\"\n"));
    std::fs::remove_file(d.path("wl/removed.toml")).unwrap();
    let started = std::time::Instant::now();
    let d = d.start(&[]);
    d.wait_for("both stopped", |_| common::daemon::gone(edited) && common::daemon::gone(removed));
    assert!(started.elapsed() < Duration::from_secs(8), "stopped by SIGINT, not killed after a timeout");
    d.wait_for("the edit runs", |d| {
        d.workload("edited").is_some_and(|w| w["state"] == "running" && w["pid"] != edited)
    });
    assert!(d.workload("removed").is_none());
}

/// `paddock restart` asked of a daemon killed before the sandbox ended
/// (its command ignores the stop signal): the next daemon adopts the
/// sandbox, finds the restart under way, and carries it out (the stop
/// signal, the kill at `stop.timeout`, a new run), rather than leave the
/// old run going unstopped.
#[test]
fn a_restart_left_unfinished_by_a_killed_daemon_is_carried_out_by_the_next() {
    let stubborn =
        "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; while :; do sleep 1; done\"]\n[stop]\ntimeout = \"2s\"\n";
    let mut d = Daemon::setup().start(&[]);
    d.write("stubborn.toml", stubborn);
    let pid = d.running_pid("stubborn");
    let out = d.paddock(&["restart", "--no-block", "stubborn"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_for("stopping", |d| d.workload("stubborn").is_some_and(|w| w["state"] == "stopping"));
    d.kill();
    let d = d.start(&[]);
    d.wait_for("stubborn restarted", |d| {
        d.workload("stubborn").is_some_and(|w| w["state"] == "running" && w["pid"] != pid)
    });
    assert!(common::daemon::gone(pid), "the old run is gone");
    std::thread::sleep(Duration::from_millis(300));
    let again = d.running_pid("stubborn");
    let d = {
        let mut d = d;
        d.kill();
        d.start(&[])
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.running_pid("stubborn"), again, "restarted once: nothing left to carry out");
}

/// `paddock stop` asked of a daemon killed before the sandbox ended (its
/// command ignores the stop signal): the next daemon adopts the sandbox,
/// finds it held, and carries the stop out, with the stop signal and
/// then the kill at `stop.timeout`.
#[test]
fn a_stop_left_unfinished_by_a_killed_daemon_is_carried_out_by_the_next() {
    let stubborn =
        "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; while :; do sleep 1; done\"]\n[stop]\ntimeout = \"2s\"\n";
    let mut d = Daemon::setup().start(&[]);
    d.write("stubborn.toml", stubborn);
    let pid = d.running_pid("stubborn");
    let out = d.paddock(&["stop", "--no-block", "stubborn"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_for("held", |d| d.workload("stubborn").is_some_and(|w| w["state"] == "stopping"));
    d.kill();
    assert!(common::daemon::alive(pid), "it ignored its stop signal and outlived the daemon");
    let d = d.start(&[]);
    d.wait_for("stubborn stopped and held", |d| {
        d.workload("stubborn").is_some_and(|w| w["state"] == "stopped" && w["held"] == true)
    });
    assert!(common::daemon::gone(pid), "its sandbox is gone");
}

/// A record written before paddock kept the manifest's text (as an
/// upgrade from an older paddock finds it) gains the text when the
/// sandbox is adopted with its file at the version it runs: a bad edit
/// before the next daemon restart leaves it running too.
#[test]
fn an_older_record_gains_the_manifest_text_at_adoption() {
    let mut d = Daemon::setup().start(&[]);
    d.write("steady.toml", SLEEPER);
    let pid = d.running_pid("steady");
    d.kill();
    assert_eq!(strip_record(&d, "steady", "source"), Some(SLEEPER.into()), "a record keeps the text");
    let mut d = d.start(&[]);
    assert_eq!(d.running_pid("steady"), pid);
    assert_eq!(record_of(&d, "steady")["source"], SLEEPER, "the text was added");
    d.kill();
    d.write("steady.toml", "command = \"not a list\"\n");
    let d = d.start(&[]);
    wait_invalid(&d, "steady");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.running_pid("steady"), pid, "still running");
}

/// The record of `name`'s sandbox.
fn record_of(d: &Daemon, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(d.path(&format!("state/sandboxes/{name}.json"))).unwrap()).unwrap()
}

/// Removes `key` from `name`'s sandbox record, as an older paddock wrote
/// it; what it held.
fn strip_record(d: &Daemon, name: &str, key: &str) -> Option<serde_json::Value> {
    let mut record = record_of(d, name);
    let value = record.as_object_mut().unwrap().remove(key);
    std::fs::write(d.path(&format!("state/sandboxes/{name}.json")), serde_json::to_vec(&record).unwrap()).unwrap();
    value
}

/// Waits until the daemon shows `name`'s file invalid (written as
/// `command = "not a list"`).
fn wait_invalid(d: &Daemon, name: &str) {
    d.wait_for(&format!("{name}'s file seen invalid"), |d| {
        d.workload(name).is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("must be an array")))
    });
}

/// A successor that would put cgroups elsewhere (its `cgroup_root`
/// changed, or an upgrade moved workloads into the unit's delegated
/// cgroup) adopts a sandbox in the cgroup it was started in: it stops it
/// through that cgroup, which goes with it.
#[test]
fn a_sandbox_adopted_after_the_cgroup_layout_changed_keeps_its_cgroup() {
    let mut d = Daemon::setup().start(&[]);
    d.write(
        "cg-moved.toml",
        &common::sandbox::busybox_manifest("exec sleep 1000", "[resources]\nmemory = \"64MiB\"\n"),
    );
    let pid = d.running_pid("cg-moved");
    let on_host = common::sandbox::memory_cgroup_dir(pid).expect("its memory cgroup");
    let group = paddock::sandbox::cgroup::workloads_group(&d.path("state"));
    assert!(on_host.ends_with(format!("{group}/cg-moved")), "{}", on_host.display());
    assert!(on_host.is_dir(), "{}", on_host.display());
    d.kill();
    std::fs::create_dir(d.path("other-cgroups")).unwrap();
    d.configure(
        "policy_dir",
        &format!("cgroup_root = {:?}\npolicy_dir", d.path("other-cgroups").display().to_string()),
    );
    let d = d.start(&[]);
    assert_eq!(d.running_pid("cg-moved"), pid, "adopted");
    assert!(d.paddock(&["stop", "cg-moved"]).status.success());
    assert!(common::daemon::gone(pid));
    d.wait_for("its cgroup removed", |_| !on_host.exists());
    // The first daemon's group, which the second (with cgroups elsewhere)
    // does not remove at its end, in each hierarchy.
    let first = on_host.parent().unwrap().file_name().unwrap();
    for hierarchy in ["memory", "pids", "cpu"] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(hierarchy).join(first));
    }
}

/// A sandbox record left unreadable (a crash of the machine can leave one
/// empty) for a workload with no cgroup (cgroup v1, no limits): its
/// sandbox cannot be found by its cgroup, but its processes run as its
/// ids. The workload is held, saying why, not started beside it.
#[test]
fn an_unreadable_record_of_a_sandbox_that_still_runs_holds_its_workload() {
    let (d, sleeping) = with_an_unreadable_record("4177");
    d.wait_for("w held", |d| {
        d.workload("w").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("unreadable")))
    });
    let w = d.workload("w").unwrap();
    assert_eq!(w["state"], "stopped", "{w}");
    assert!(w["error"].as_str().unwrap().contains("processes run as its ids"), "{w}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(common::daemon::processes(&["/bin/sleep", "4177"]), sleeping, "none started beside it");
    // Nor by the operator while they run: `start` (and `restart`) say which.
    for asked in ["start", "restart"] {
        let out = d.paddock(&[asked, "w"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("processes run as its ids"), "{asked}: {err}");
        assert!(err.contains(&sleeping[0].to_string()), "{err}");
    }
    assert_eq!(common::daemon::processes(&["/bin/sleep", "4177"]), sleeping, "none started beside it");
    // Once they are gone (the workload, and its init that waits for its
    // end to be heard), a start is the operator's. The advice, followed
    // as said, is enough (helper-101: a `kill` left the init waiting).
    let out = d.paddock(&["start", "w"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let advice = err.split('`').nth(1).unwrap_or_else(|| panic!("a command to run: {err}"));
    let init = common::daemon::parent(sleeping[0]).unwrap();
    assert!(advice.contains(&init.to_string()), "its init is named: {err}");
    let mut words = advice.split_whitespace();
    let ran = std::process::Command::new(words.next().unwrap()).args(words).status().unwrap();
    assert!(ran.success(), "{advice}");
    d.wait_for("the old sandbox gone", |_| common::daemon::gone(sleeping[0]) && common::daemon::gone(init));
    let out = d.paddock(&["start", "w"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.running_pid("w");
}

/// That workload's manifest removed while the processes of its unreadable
/// record's sandbox still run: it is forgotten, but its id slice is given
/// to no other workload while processes run as those ids (a new workload
/// given it would share host ids with a sandbox no one supervises).
#[test]
fn a_workload_in_doubt_forgotten_keeps_its_ids_while_processes_run_as_them() {
    let (mut d, sleeping) = with_an_unreadable_record("4178");
    d.wait_for("w held", |d| {
        d.workload("w").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains("processes run as its ids")))
    });
    let slice_of = |d: &Daemon, name: &str| -> Option<u64> {
        let table: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path("state/idmap.json")).unwrap()).unwrap();
        table["slices"][name]["uid"]["start"].as_u64()
    };
    let held = slice_of(&d, "w").expect("w has a slice");
    std::fs::remove_file(d.path("wl/w.toml")).unwrap();
    d.wait_for("w forgotten", |d| d.workload("w").is_none());
    d.write("x.toml", "command = [\"/bin/sleep\", \"4179\"]\n");
    d.running_pid("x");
    assert_ne!(slice_of(&d, "x"), Some(held), "x was given the ids w's sandbox still runs as");
    assert_eq!(slice_of(&d, "w"), Some(held), "w's slice stays taken");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("its id slice stays taken"), "{log}");
    // Its manifest back while they run: held again, not started beside them.
    let held_again = |d: &Daemon, why: &str| {
        d.write("w.toml", "command = [\"/bin/sleep\", \"4178\"]\n");
        d.wait_for("w held again", |d| {
            d.workload("w").is_some_and(|w| w["error"].as_str().is_some_and(|e| e.contains(why)))
        });
        assert_eq!(d.workload("w").unwrap()["state"], "stopped");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(common::daemon::processes(&["/bin/sleep", "4178"]), sleeping, "none started beside it");
    };
    held_again(&d, "came back");
    // So after a restart of the daemon too, which no longer knows why the
    // slice was kept.
    std::fs::remove_file(d.path("wl/w.toml")).unwrap();
    d.wait_for("w forgotten again", |d| d.workload("w").is_none());
    d.kill();
    let d = d.start(&[]);
    held_again(&d, "run as its ids");
    kill_with_its_init(&d, sleeping[0]);
    // They gone, its manifest removed again frees the slice.
    std::fs::remove_file(d.path("wl/w.toml")).unwrap();
    d.wait_for("w forgotten, its slice free", |d| d.workload("w").is_none() && slice_of(d, "w").is_none());
}

/// A slice kept for a forgotten workload (`reserved`) whose manifest came
/// back once its processes were gone: the mark is done with. Left on disk
/// (or found beside a sandbox of it that a daemon adopts), it must not
/// hold that sandbox in doubt for running as its own ids.
#[test]
fn a_reserved_mark_beside_an_adopted_sandbox_of_its_own_holds_nothing() {
    let mut d = Daemon::setup().start(&[]);
    d.write("w.toml", SLEEPER);
    let pid = d.running_pid("w");
    d.kill();
    // What a forget kept (a first run of it keeps nothing of its own).
    let table: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path("state/idmap.json")).unwrap()).unwrap();
    let kept = d.path("state/workloads/w.json");
    std::fs::create_dir_all(d.path("state/workloads")).unwrap();
    std::fs::write(&kept, serde_json::json!({"slice": table["slices"]["w"], "reserved": true}).to_string()).unwrap();
    let d = d.start(&[]);
    assert_eq!(d.running_pid("w"), pid, "adopted");
    std::thread::sleep(Duration::from_millis(300));
    let w = d.workload("w").unwrap();
    assert_eq!((w["state"].as_str(), w["pid"].as_i64()), (Some("running"), Some(pid)), "{w}");
    assert!(w["error"].is_null(), "held in doubt for its own sandbox: {w}");
    d.wait_for("the mark gone from disk", |_| !std::fs::read_to_string(&kept).unwrap().contains("reserved"));
}

/// What a `paddock run` in the host's pid namespace killed with -9 left
/// running (its cgroup's processes) is killed when a daemon starts.
#[test]
fn a_daemon_start_kills_what_a_host_pid_run_killed_with_sigkill_left() {
    let d = Daemon::setup();
    std::fs::write(
        d.path("out/leaver.toml"),
        "command = [\"/bin/sh\", \"-c\", \"/bin/sleep 4184 & exec /bin/sleep 4185\"]\n[namespaces]\npid = \"host\"\n",
    )
    .unwrap();
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["run", "--policy", "privileged", "--config"])
        .arg(d.path("paddock.toml"))
        .arg(d.path("out/leaver.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = common::daemon::processes(&["/bin/sleep", "4184"]);
        if !left.is_empty() {
            break left;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    run.kill().unwrap();
    run.wait().unwrap();
    // (Another test's daemon may sweep it first: no matter.)
    let d = d.start(&[]);
    d.wait_for("what the run left killed", |_| left.iter().all(|p| common::daemon::gone(*p)));
}

/// Kills a workload's process and its sandbox's init (its parent), which
/// no record names and no daemon will hear, and waits until both are gone.
fn kill_with_its_init(d: &Daemon, workload: i64) {
    let left = [workload, common::daemon::parent(workload).unwrap()];
    assert_eq!(std::fs::read_to_string(format!("/proc/{}/comm", left[1])).unwrap(), "paddock-init\n");
    for pid in &left {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    d.wait_for("the old sandbox gone", |_| left.iter().all(|p| common::daemon::gone(*p)));
}

/// A daemon whose workload `w` (`/bin/sleep SECONDS`, on no cgroup) ran
/// on after its predecessor was killed and its record emptied; and the
/// sleeper's pid.
fn with_an_unreadable_record(seconds: &str) -> (Daemon, Vec<i64>) {
    let d = Daemon::setup();
    // Two slices of ids of their own (one per test, by its sleeper): the
    // other tests' daemons' workloads, running meanwhile, would otherwise
    // run as the ids these tests look at.
    let first = 900_000_000 + 131_072 * (seconds.parse::<u64>().unwrap() % 100);
    for file in ["subuid", "subgid"] {
        std::fs::write(d.path(file), format!("paddock:{first}:131072\n")).unwrap();
    }
    let mut d = d.start(&[]);
    d.write("w.toml", &format!("command = [\"/bin/sleep\", \"{seconds}\"]\n"));
    d.running_pid("w");
    let sleeping = common::daemon::processes(&["/bin/sleep", seconds]);
    assert_eq!(sleeping.len(), 1);
    d.kill();
    std::fs::write(d.path("state/sandboxes/w.json"), "").unwrap();
    (d.start(&[]), sleeping)
}

/// A stop under way when the daemon died goes on with what was left of
/// its timeout: the successor that adopts the run signals it again (the
/// signal may not have gone) but kills it when the first timeout ends,
/// not a whole timeout after its own start.
#[test]
fn a_stop_under_way_when_the_daemon_died_ends_when_its_timeout_does() {
    let mut d = Daemon::setup().start(&[]);
    // Deaf to its stop signal: only the timeout's SIGKILL ends it.
    d.write(
        "deaf.toml",
        "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; exec /bin/sleep 4191\"]\n[stop]\ntimeout = \"6s\"\n",
    );
    let init = d.running_pid("deaf");
    d.wait_for("its sleep", |_| !processes(&["/bin/sleep", "4191"]).is_empty());
    let asked = std::time::Instant::now();
    assert!(d.paddock(&["stop", "--no-block", "deaf"]).status.success());
    std::thread::sleep(Duration::from_secs(3));
    d.kill();
    d = d.start(&[]);
    d.wait_for("deaf stopped", |d| d.workload("deaf").is_some_and(|w| w["state"] == "stopped"));
    let took = asked.elapsed();
    assert!(common::daemon::gone(init));
    // Again from the successor's start, it would be past 9 s.
    assert!(took >= Duration::from_secs(5), "not before its timeout: {took:?}");
    assert!(took < Duration::from_millis(7500), "its timeout ran on, not again from the start: {took:?}");
    assert_eq!(d.terminate(), 0);
}

/// An id table that is gone (deleted by hand, a state directory restored
/// without it) while sandboxes run is not a fresh one: it is rebuilt from
/// the kept files and the records, so a new workload is never given the
/// host ids a running sandbox has.
#[test]
fn a_lost_id_table_gives_no_running_sandboxs_slice_to_another() {
    let mut d = Daemon::setup().start(&[]);
    d.write("old.toml", SLEEPER);
    let pid = d.running_pid("old");
    let slice = d.workload("old").unwrap()["uid_map"]["host_start"].clone();
    assert!(slice.is_u64(), "{slice}");
    d.kill();
    std::fs::remove_file(d.path("state/idmap.json")).unwrap();
    d = d.start(&[]);
    assert_eq!(d.running_pid("old"), pid, "adopted");
    assert_eq!(d.workload("old").unwrap()["uid_map"]["host_start"], slice, "its slice is still its own");
    d.write("new.toml", SLEEPER);
    d.running_pid("new");
    let new = d.workload("new").unwrap()["uid_map"]["host_start"].clone();
    assert_ne!(new, slice, "a new workload was given the host ids a running sandbox has");
    assert!(std::fs::read_to_string(d.path("out/daemon.log")).unwrap().contains("the id table is missing"));
    assert_eq!(d.terminate(), 0);
}
