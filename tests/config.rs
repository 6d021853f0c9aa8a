//! The daemon's configuration file, through `paddock run --config`: its
//! keys are used, flags beat it, and a bad file is reported like a bad
//! manifest. (Root and user namespaces required.)

mod common;

use std::process::Command;

use common::sandbox::{World, busybox_manifest, stderr, stdout};

fn config(w: &World, extra: &str) -> std::path::PathBuf {
    let p = |f: &str| w.path(f).display().to_string();
    let text = format!(
        "state_dir = {:?}\npolicy_dir = \"/nonexistent\"\nvolumes_root = {:?}\n{extra}\n[remap]\nsubuid = {:?}\nsubgid = {:?}\npasswd = {:?}\ngroup = {:?}\n",
        p("state"),
        p("volumes"),
        p("subuid"),
        p("subgid"),
        p("passwd"),
        p("group")
    );
    let path = w.path("paddock.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], manifest: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_paddock")).arg("run").args(args).arg(manifest).output().unwrap()
}

#[test]
fn the_files_keys_are_used_and_flags_beat_them() {
    let w = World::new();
    let cfg = config(&w, "policies = [\"privileged\"]");
    let cfg = cfg.to_str().unwrap();
    let m = w.manifest("hostnet", &busybox_manifest("echo ran", "[namespaces]\nnetwork = \"host\"\n"));
    // The file's policy (privileged) allows the host network; its state_dir holds the slice.
    let out = run(&["--config", cfg], &m);
    assert_eq!(stdout(&out), "ran\n", "{}", stderr(&out));
    assert!(w.path("state/idmap.json").exists(), "the configuration's state_dir is used");
    // A flag beats the file.
    let out = run(&["--config", cfg, "--policy", "baseline"], &m);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("rule: no-host-network-with-remap"), "{}", stderr(&out));
}

#[test]
fn a_bad_configuration_is_reported_with_file_line_and_column() {
    let w = World::new();
    let cfg = config(&w, "resync_interval = 30\nworkload = \"/etc\"");
    let m = w.manifest("any", &busybox_manifest("true", ""));
    let out = run(&["--config", cfg.to_str().unwrap()], &m);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    let file = cfg.display();
    assert!(err.contains(&format!("{file}:4:19: error: `resync_interval` must be a string, not an integer")), "{err}");
    assert!(err.contains(&format!("{file}:5:1: error: unknown key `workload` at the top level")), "{err}");
    assert!(err.contains("did you mean `workloads`?"), "{err}");
    let out = run(&["--config", "/nonexistent/paddock.toml"], &m);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("cannot read the configuration /nonexistent/paddock.toml"), "{}", stderr(&out));
}

/// An account file a flag names is said to be the flag's, as one the
/// configuration names is said with its key and line.
#[test]
fn an_account_files_error_names_the_flag_or_key_that_named_it() {
    let w = World::new();
    let cfg = config(&w, "");
    let m = w.manifest("any", &busybox_manifest("true", ""));
    let dir = w.path("state").display().to_string();
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["--config", cfg.to_str().unwrap(), "--subuid", &dir], &m);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{dir} is not a regular file (named by --subuid): name an account file itself there, such as /etc/subuid"
        )),
        "{err}"
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&format!("{:?}", w.path("subgid").display().to_string()), &format!("{dir:?}"));
    std::fs::write(&cfg, text).unwrap();
    let out = run(&["--config", cfg.to_str().unwrap()], &m);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{dir} is not a regular file (named by `[remap] subgid` at {}:7:10)", cfg.display())),
        "{err}"
    );
}
