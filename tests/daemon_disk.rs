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
    let file = d.path("state/workloads/steady.json").display().to_string();
    assert!(text.contains(&file), "the file it cannot write is named: {text}");

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

/// Makes a directory immutable (`chattr +i`), or mutable again: nothing
/// can be created in it, not even by root, for as long as the test wants
/// (a filled disk gets room back as soon as any file is removed).
fn immutable(dir: &Path, on: bool) {
    let out = std::process::Command::new("chattr").arg(if on { "+i" } else { "-i" }).arg(dir).output();
    let out = out.expect("this test needs chattr (e2fsprogs)");
    assert!(out.status.success(), "chattr on {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
}

/// A one-shot's end that cannot be written (a disk that stays full; here
/// the kept files' directory is made immutable) is not acknowledged: its
/// init keeps it until it is on disk, so a daemon killed meanwhile leaves
/// it for the next to hear, which does not run the one-shot again for the
/// same version.
#[test]
fn a_one_shots_end_that_cannot_be_written_is_kept_by_its_init_until_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::setup();
    let _tmpfs = tmpfs(&d.path("state"), "4m");
    let data = d.path("data");
    std::fs::create_dir(&data).unwrap();
    // Writable by the sandbox's root, an unprivileged host uid.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut d = d.start(&[]);
    d.write(
        "once.toml",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"echo run >> /data/runs; sleep 1\"]\n[restart]\npolicy = \"never\"\n[[mounts]]\nsource = {:?}\ntarget = \"/data\"\nreadonly = false\n",
            data.display().to_string()
        ),
    );
    d.running_pid("once");
    let kept = d.path("state/workloads");
    d.wait_for("its kept file", |d| d.path("state/workloads/once.json").exists());
    immutable(&kept, true);
    d.wait_for("the end that cannot be written", |d| log(d).contains("cannot write how it ended"));
    std::thread::sleep(Duration::from_millis(1500));
    let first = log(&d);
    d.kill();
    immutable(&kept, false);
    let d = d.start(&[]);
    d.wait_for("the one-shot's end", |d| d.workload("once").is_some_and(|w| w["state"] == "exited"));
    std::thread::sleep(Duration::from_millis(1500));
    let runs = std::fs::read_to_string(data.join("runs")).unwrap();
    assert_eq!(runs, "run\n", "the one-shot ran again for the same version:\n{first}\n{}", log(&d));
}

/// A start whose sandbox cannot be recorded (a full disk) says which file
/// and what to do, and waits rather than fail.
#[test]
fn a_record_that_cannot_be_written_names_its_file() {
    let d = Daemon::setup();
    let _tmpfs = tmpfs(&d.path("state"), "1m");
    let d = d.start(&[]);
    d.write("steady.toml", SLEEPER);
    d.running_pid("steady");
    let filler = fill(&d.path("state"));
    d.paddock(&["restart", "steady"]);
    let record = d.path("state/sandboxes/steady.json").display().to_string();
    d.wait_for("the start to wait for the disk", |d| {
        d.workload("steady").is_some_and(|w| w["error"].as_str().unwrap_or("").contains("cannot record"))
    });
    let w = d.workload("steady").unwrap();
    let error = w["error"].as_str().unwrap();
    assert!(error.contains(&record) && error.contains("free space"), "{error}");
    assert_ne!(w["state"], "failed", "a full disk is not the workload's failure");
    std::fs::remove_file(filler).unwrap();
    d.running_pid("steady");
}
