//! The README's try-it command: `./try.sh` runs the daemon from this
//! checkout on the bundled examples, and the client commands then work
//! with PADDOCK_SOCKET alone. (Root required; the daemon runs in a network
//! namespace this test makes, so the web example's bridge and rules touch
//! nothing of the host's.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The try-it daemon, stopped as Ctrl-C stops it (it and its workloads)
/// however the test ends.
struct Interrupted(std::process::Child);

impl Drop for Interrupted {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}

#[test]
fn try_sh_runs_the_examples_and_the_clients_find_it_through_paddock_socket() {
    common::sandbox::require_root();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("./try.sh") && readme.contains("PADDOCK_SOCKET"), "the README shows the try-it command");
    let dir = tempfile::Builder::new().prefix("paddock-try").tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_paddock"));
    let target = bin.parent().unwrap().parent().unwrap();
    // The host's ranges, as this test's mount namespace shows them: a
    // user's rootless containers' and an installed paddock's.
    let host = tempfile::tempdir().unwrap();
    let host_ranges = "# a comment\nalice:131072:65536\n  paddock:300000:65536\n";
    for file in ["subuid", "subgid"] {
        std::fs::write(host.path().join(file), host_ranges).unwrap();
    }
    let script = "mount --bind \"$1/subuid\" /etc/subuid && mount --bind \"$1/subgid\" /etc/subgid \
        && ip link set lo up && exec ./try.sh";
    let mut daemon = Interrupted(
        Command::new("unshare")
            .args(["--net", "--mount", "sh", "-c", script, "sh"])
            .arg(host.path())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PADDOCK_TRY_DIR", dir.path())
            .env("CARGO_TARGET_DIR", target)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("try.log")).unwrap()))
            .spawn()
            .unwrap(),
    );
    let socket = dir.path().join("paddock.sock");
    let status = || Command::new(bin).args(["status", "--json"]).env("PADDOCK_SOCKET", &socket).output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = status();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("\"worker\"") && text.contains("\"running\"") {
            break;
        }
        let log = std::fs::read_to_string(dir.path().join("try.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the try-it daemon never ran the examples:\n{text}\n{log}");
        assert!(daemon.0.try_wait().unwrap().is_none(), "try.sh exited:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The web example on a bridge and subnet of its own, apart from an
    // installed paddock's (paddock0, 10.77.0.0/16).
    loop {
        let text = String::from_utf8_lossy(&status().stdout).into_owned();
        let all: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let web = all.as_array().and_then(|a| a.iter().find(|w| w["name"] == "web")).cloned().unwrap_or_default();
        if web["state"] == "running" {
            let address = web["addresses"][0].as_str().unwrap_or_default();
            assert!(address.starts_with("10.78."), "{web}");
            break;
        }
        let log = std::fs::read_to_string(dir.path().join("try.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the web example never ran (the CNI plugins are needed):\n{web}\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The client commands need nothing but PADDOCK_SOCKET.
    let logs = Command::new(bin).args(["logs", "nightly-report"]).env("PADDOCK_SOCKET", &socket).output().unwrap();
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    // Nothing under /etc was written: its own id files are in the try
    // directory, where the host's ranges are taken already, so its range
    // is none of theirs.
    for file in ["subuid", "subgid"] {
        let ranges = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let lines: Vec<&str> = ranges.lines().collect();
        assert!(lines.starts_with(&["host-alice:131072:65536", "host-paddock:300000:65536"]), "{ranges}");
        let own = lines.iter().find_map(|l| l.strip_prefix("paddock:")).expect(&ranges);
        let (start, count) = own.split_once(':').unwrap();
        let (start, count): (u64, u64) = (start.parse().unwrap(), count.parse().unwrap());
        for (host_start, host_count) in [(131072, 65536), (300000, 65536)] {
            assert!(start >= host_start + host_count || start + count <= host_start, "{ranges}");
        }
    }
    // Ctrl-C stops it and every workload.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGINT) };
    let code = daemon.0.wait().unwrap();
    assert!(code.success(), "{code:?}: {}", std::fs::read_to_string(dir.path().join("try.log")).unwrap_or_default());
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[test]
fn try_sh_refuses_a_directory_someone_else_made_first() {
    common::sandbox::require_root();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("taken");
    std::fs::create_dir(&dir).unwrap();
    // As if another user made it first in /tmp.
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_paddock"));
    let out = Command::new("./try.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PADDOCK_TRY_DIR", &dir)
        .env("CARGO_TARGET_DIR", bin.parent().unwrap().parent().unwrap())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("is not a directory of root's"), "{said}");
    assert!(!dir.join("paddock.toml").exists(), "nothing written into it");
}
