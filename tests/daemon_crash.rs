//! A daemon killed with SIGKILL at any point of a burst of starts: the
//! half-built sandboxes go with it, none holds the daemon's lock or socket,
//! and its successor starts each workload exactly once. (Root and user
//! namespaces required.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{Daemon, processes};

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
    // Kill points spread over the burst: before, during and after the starts.
    for (round, delay_ms) in [0u64, 3, 9, 17, 30, 45, 70, 99].into_iter().enumerate() {
        d = d.start(&[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let mut child = d.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        // No child of the dead daemon may linger holding its lock (or anything else).
        let lock = d.path("state/daemon.lock");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !holders(&lock).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} (kill after {delay_ms} ms): {:?} still hold the dead daemon's lock",
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
