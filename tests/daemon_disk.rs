//! A full disk under the state directory is the daemon's condition, not
//! the workloads': what runs keeps running, what cannot start waits
//! (never `failed`), each failing write is said once, and everything
//! catches up when space returns. (Root and user namespaces required.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::{Daemon, SLEEPER};

/// A small tmpfs mounted for the test's life.
fn tmpfs(at: &Path, size: &str) -> common::Mounted {
    std::fs::create_dir_all(at).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={size},mode=0700").as_str()),
    )
    .unwrap();
    common::Mounted(at.to_owned())
}

/// Fills the filesystem at `dir`; returns the filler to remove later.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    for size in [64 << 10, 4 << 10, 1] {
        let block = vec![0u8; size];
        while f.write_all(&block).is_ok() {}
    }
    filler
}

fn log(d: &Daemon) -> String {
    std::fs::read_to_string(d.path("out/daemon.log")).unwrap()
}

#[test]
fn a_full_state_directory_is_reported_once_and_caught_up_on() {
    let d = Daemon::setup();
    let _tmpfs = tmpfs(&d.path("state"), "4m");
    let d = d.start(&[]);
    // About 300 KB of output a second: no page freed by chance absorbs it.
    d.write(
        "chatty.toml",
        "command = [\"/bin/sh\", \"-c\", \"while true; do yes line | head -n 100; sleep 0.01; done\"]\n",
    );
    d.write("steady.toml", SLEEPER);
    d.running_pid("steady");
    d.running_pid("chatty");

    let filler = fill(&d.path("state"));
    // A new workload cannot be given a slice: it waits, it does not fail.
    d.write("late.toml", SLEEPER);
    d.wait_for("late to wait for the disk", |d| {
        d.workload("late").is_some_and(|w| w["error"].as_str().unwrap_or("").contains("No space left on device"))
    });
    assert_ne!(d.workload("late").unwrap()["state"], "failed", "a full disk is not the workload's failure");
    // A hold cannot be written: the stop still happens, and the write is retried.
    assert!(d.paddock(&["stop", "steady"]).status.success());
    std::thread::sleep(Duration::from_millis(1500));
    let text = log(&d);
    assert_eq!(text.matches("cannot write the log").count(), 1, "said once, not per line:\n{text}");
    assert!(text.contains("cannot write what is kept of it"), "{text}");

    // Space returns: everything catches up.
    std::fs::remove_file(filler).unwrap();
    d.running_pid("late");
    d.wait_for("the hold written", |d| {
        std::fs::read_to_string(d.path("state/workloads/steady.json")).is_ok_and(|t| t.contains("hold"))
    });
    d.wait_for("the log written again", |d| log(d).contains("the log is written again"));
    assert_eq!(d.workload("steady").unwrap()["state"], "stopped");
    assert!(log(&d).contains("kept state is written again"));
}
