//! What the daemon trusts, checked at every scan and every start: the
//! workloads directory and each manifest must be root's and writable by
//! root alone; a directory replaced whole is watched again; state that
//! cannot be read fails closed. (Root and user namespaces required.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::daemon::{Daemon, SLEEPER};

fn log(d: &Daemon) -> String {
    std::fs::read_to_string(d.path("out/daemon.log")).unwrap()
}

#[test]
fn a_workloads_directory_made_unsafe_while_running_stops_changes_until_fixed() {
    let d = Daemon::setup().start(&[]);
    d.write("web.toml", SLEEPER);
    std::fs::write(d.path("wl/notes.yaml"), "x").unwrap();
    let pid = d.running_pid("web");
    // Made world-writable: uid 65534 drops a manifest; nothing of it applies.
    std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", "printf 'command = [\"/bin/sleep\", \"1007\"]\\n' > intruder.toml"])
        .current_dir(d.path("wl"))
        .uid(65534)
        .status()
        .unwrap();
    assert!(out.success());
    d.wait_for("the refusal to be logged", |d| log(d).contains("the workloads directory is refused"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.workload("intruder").is_none(), "nothing from an unsafe directory applies");
    assert_eq!(d.workload("web").unwrap()["pid"].as_i64(), Some(pid), "what runs keeps running");
    assert_eq!(log(&d).matches("the workloads directory is refused").count(), 1, "said once, loudly");
    // A reload applies nothing, and says so: a failure (`systemctl reload` fails), not "nothing changed".
    let reload = d.paddock(&["reload"]);
    let said = String::from_utf8_lossy(&reload.stderr);
    assert_eq!(reload.status.code(), Some(1), "{said}");
    assert!(said.contains("error: the workloads directory is refused: ") && said.contains("writable"), "{said}");
    let out = String::from_utf8_lossy(&reload.stdout);
    assert!(!out.contains("nothing changed") && !out.contains("notes.yaml"), "nothing of the files, unread: {out}");
    // Fixed: changes apply again, and the intruder's file (not root's) is refused.
    std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.write("api.toml", SLEEPER);
    d.running_pid("api");
    let intruder = d.workload("intruder").expect("the file is listed with its problem");
    assert_eq!(intruder["state"], "invalid");
    assert!(intruder["error"].as_str().unwrap().contains("owned by uid 65534, not root"), "{intruder}");
    assert!(log(&d).contains("safe again"));
    // The directory was 0755 from the start: every workload could read the manifests.
    assert!(log(&d).contains("any user can reach the manifests in"), "said at start");
}

/// A file of the workloads directory that is not a manifest (`web.yaml`,
/// `api.toml.bak`) is said in the log, once, with what to do; an editor's
/// temporaries are not. (The daemon ignored them silently.)
#[test]
fn files_that_are_not_manifests_are_said_once_not_silently_ignored() {
    let d = Daemon::setup().start(&[]);
    for file in ["web.yaml", "api.toml.bak", ".web.toml.swp", "web.toml~", "4913"] {
        std::fs::write(d.path("wl").join(file), SLEEPER).unwrap();
    }
    d.write("one.toml", SLEEPER);
    d.running_pid("one");
    assert!(d.paddock(&["reload"]).status.success());
    let said = |d: &Daemon, file: &str| {
        let field = format!("file={}", d.path("wl").join(file).display());
        log(d)
            .lines()
            .filter(|l| l.contains("not read: only NAME.toml files are workloads") && l.ends_with(&field))
            .count()
    };
    assert_eq!((said(&d, "web.yaml"), said(&d, "api.toml.bak")), (1, 1), "{}", log(&d));
    for file in [".web.toml.swp", "web.toml~", "4913"] {
        assert_eq!(said(&d, file), 0, "{file} is an editor's: {}", log(&d));
    }
    assert!(d.workload("web").is_none(), "not run");
    // A reload's answer says so too, at each reload.
    for _ in 0..2 {
        let out = String::from_utf8(d.paddock(&["reload"]).stdout).unwrap();
        let web = format!("warning: {}: not read: only NAME.toml files are workloads", d.path("wl/web.yaml").display());
        assert!(out.lines().any(|l| l.starts_with(&web)), "{out}");
        assert!(!out.contains(".web.toml.swp"), "{out}");
    }
    // Gone and back: said again.
    std::fs::remove_file(d.path("wl/web.yaml")).unwrap();
    assert!(d.paddock(&["reload"]).status.success());
    std::fs::write(d.path("wl/web.yaml"), SLEEPER).unwrap();
    d.wait_for("web.yaml said again", |d| said(d, "web.yaml") == 2);
}

#[test]
fn a_workloads_directory_replaced_whole_is_watched_again() {
    let d = Daemon::setup().start(&[]);
    d.write("one.toml", SLEEPER);
    d.running_pid("one");
    // As `cp -a wl wl.new; rm -rf wl; mv wl.new wl` does.
    let fresh = d.path("wl.new");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(d.path("wl/one.toml"), fresh.join("one.toml")).unwrap();
    std::fs::remove_dir_all(d.path("wl")).unwrap();
    std::fs::rename(&fresh, d.path("wl")).unwrap();
    // Once the new directory is watched (after the rescan the swap set off).
    d.wait_for("the new directory watched", |d| log(d).contains("watching what it is now"));
    // A change in the new directory applies at once, not at the 30 s resync.
    std::fs::write(d.path("wl/two.toml"), SLEEPER).unwrap();
    let started = std::time::Instant::now();
    d.running_pid("two");
    assert!(started.elapsed() < Duration::from_secs(5), "seen after {:?}", started.elapsed());
}

#[test]
fn an_unreadable_held_list_holds_every_workload_instead_of_starting_them() {
    let d = Daemon::setup();
    std::fs::create_dir_all(d.path("state")).unwrap();
    std::fs::write(d.path("state/held.json"), "{\"web\": 1").unwrap();
    d.write("web.toml", SLEEPER);
    d.write("api.toml", SLEEPER);
    let d = d.start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    for name in ["web", "api"] {
        let w = d.workload(name).unwrap();
        assert_eq!((w["state"].as_str(), w["held"].as_bool()), (Some("stopped"), Some(true)), "{w}");
        assert!(w["error"].as_str().unwrap().contains("held workloads is unreadable"), "{w}");
    }
    // An operator's start releases it.
    assert!(d.paddock(&["start", "web"]).status.success());
    d.running_pid("web");
    assert_eq!(d.workload("api").unwrap()["state"], "stopped");
}

#[test]
fn a_lost_id_table_keeps_a_stopped_workloads_slice_from_going_to_another() {
    let d = Daemon::setup();
    let mut d = d.start(&[]);
    d.write("first.toml", SLEEPER);
    d.running_pid("first");
    let slice = d.workload("first").unwrap()["uid_map"].clone();
    // Stopped (held) and the daemon gone: no sandbox record holds its slice.
    assert!(d.paddock(&["stop", "first"]).status.success());
    d.wait_for("first stopped", |d| d.workload("first").is_some_and(|w| w["state"] == "stopped"));
    assert_eq!(d.terminate(), 0);
    std::fs::write(d.path("state/idmap.json"), "{torn").unwrap();
    let d = d.start(&[]);
    d.write("second.toml", SLEEPER);
    d.running_pid("second");
    assert_ne!(d.workload("second").unwrap()["uid_map"], slice, "the stopped workload's slice went to another");
    assert_eq!(d.workload("first").unwrap()["uid_map"], slice, "and it keeps it");
}

#[test]
fn an_unreadable_kept_file_holds_its_workload() {
    let d = Daemon::setup().start(&[]);
    d.write("web.toml", "command = [\"/bin/true\"]\n[restart]\npolicy = \"never\"\n");
    d.wait_for("web exited", |d| d.workload("web").is_some_and(|w| w["state"] == "exited"));
    let mut d = d;
    assert_eq!(d.terminate(), 0);
    std::fs::write(d.path("state/workloads/web.json"), "torn").unwrap();
    let d = d.start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let w = d.workload("web").unwrap();
    assert_eq!(w["state"], "stopped", "in doubt, it does not run again: {w}");
    assert!(w["error"].as_str().unwrap().contains("kept state is unreadable"), "{w}");
    assert!(d.path("state/workloads/web.json.corrupt").exists());
}

use std::os::unix::process::CommandExt;
