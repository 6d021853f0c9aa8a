//! Helpers for tests that start real sandboxes. They need root and user
//! namespaces; without them they fail saying so (CI runs as root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Fails the test, loudly, when it cannot run here.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test starts real sandboxes and must run as root (CI does); run `sudo cargo test`");
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    assert!(max.trim() != "0", "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)");
}

/// tests/probes/syscalls.c, built static (it runs in a busybox root) in
/// the new directory `dir` as `dir/syscalls`; returns `dir`. It prints
/// `NAME RESULT` lines: each system call's errno or `ok`, and the id of
/// its session keyring.
pub fn syscall_probe(dir: &Path) -> std::path::PathBuf {
    probe(dir, "syscalls")
}

/// tests/probes/NAME.c, built static (it runs in a busybox root) in the
/// new directory `dir` as `dir/NAME`, readable and runnable by all (a
/// workload's ids are not root's); returns `dir`.
pub fn probe(dir: &Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join(name))
        .arg(format!("{}/tests/probes/{name}.c", env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("gcc builds the probe: apt-get install gcc libc6-dev (.ci/run does)");
    assert!(out.status.success(), "building the probe {name}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_owned()
}

/// A busybox-static root filesystem, built once per test binary and
/// removed when it exits (a static is never dropped).
pub fn busybox_rootfs() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_rootfs() {
        if let Some(dir) = ROOT.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    ROOT.get_or_init(|| {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("busybox is needed for the test rootfs: apt-get install busybox-static (.ci/run does)");
        let dir = tempfile::Builder::new().prefix("paddock-rootfs").tempdir().unwrap();
        for d in ["bin", "proc", "dev", "tmp", "sys", "etc", "root", "data"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::copy(busybox, dir.path().join("bin/busybox")).unwrap();
        let list = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            let _ = std::os::unix::fs::symlink("busybox", dir.path().join("bin").join(applet));
        }
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        // Readable by the remapped root, which is not the host's root.
        Command::new("chmod").args(["-R", "a+rX"]).arg(dir.path()).status().unwrap();
        // SAFETY: registers a function that takes no arguments and only
        // reads a static that is set before it can run.
        assert_eq!(unsafe { libc::atexit(remove_rootfs) }, 0, "atexit");
        dir.keep()
    })
}

/// One test's private world: state directory, account files, volumes root.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        require_root();
        let dir = tempfile::Builder::new().prefix("paddock-test").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for f in ["subuid", "subgid"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        std::fs::copy("/etc/passwd", dir.path().join("passwd")).unwrap();
        std::fs::copy("/etc/group", dir.path().join("group")).unwrap();
        // Root's alone, as paddock insists for idmapped volumes.
        std::fs::create_dir_all(dir.path().join("volumes")).unwrap();
        std::fs::set_permissions(dir.path().join("volumes"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        World { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes `name.toml` and returns its path.
    pub fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn run_args(&self) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        vec![
            "run".into(),
            "--policy-dir".into(),
            "/nonexistent".into(),
            "--state-dir".into(),
            p("state"),
            "--subuid".into(),
            p("subuid"),
            "--subgid".into(),
            p("subgid"),
            "--passwd".into(),
            p("passwd"),
            "--group-file".into(),
            p("group"),
            "--volumes-root".into(),
            p("volumes"),
        ]
    }

    /// `paddock run` with this world's paths, extra flags, the manifest,
    /// then an optional command after `--`.
    pub fn run(&self, extra: &[&str], manifest: &Path, command: &[&str]) -> Output {
        let mut args = self.run_args();
        args.extend(extra.iter().map(|a| a.to_string()));
        self.run_with(args, manifest, command)
    }

    /// `paddock run` with `args` (this world's `run_args`, changed), the
    /// manifest, then an optional command after `--`.
    pub fn run_with(&self, args: Vec<String>, manifest: &Path, command: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_paddock"));
        cmd.args(args).arg(manifest);
        if !command.is_empty() {
            cmd.arg("--").args(command);
        }
        cmd.stdin(std::process::Stdio::null());
        cmd.output().unwrap()
    }

    /// The slice's first host uid, from the allocation file.
    pub fn slice_start(&self, name: &str) -> u64 {
        let text = std::fs::read_to_string(self.path("state/idmap.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["slices"][name]["uid"]["start"].as_u64().unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A manifest with the busybox rootfs and the given extra TOML.
pub fn busybox_manifest(command: &str, extra: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", {command:?}]\nrootfs = {{ path = {:?} }}\n{extra}",
        busybox_rootfs().display().to_string()
    )
}

/// The host's cgroup directories of a `paddock run` of the manifest
/// `name` (`paddock-run/NAME-PID.START.PIDNS`; v1 here, v2 elsewhere).
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let ours = |file: &std::ffi::OsStr| {
        file.to_str().and_then(|f| f.strip_prefix(name)?.strip_prefix('-')).is_some_and(|run| {
            let parts: Vec<&str> = run.split('.').collect();
            parts.len() == 3 && parts.iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    ["memory", "pids", "cpu", "unified", ""]
        .iter()
        .flat_map(|c| std::fs::read_dir(Path::new("/sys/fs/cgroup").join(c).join("paddock-run")).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(ours) && p.is_dir())
        .collect()
}

/// Every descendant of `pid` (host pids), found through /proc's parent links.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // The command name may hold spaces; the fields after its ')' do not.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Waits until `pid` has at least `n` descendants (or 5 s pass) and returns them.
pub fn wait_for_descendants(pid: u32, n: usize) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let found = descendants(pid);
        if found.len() >= n || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The host directory of the cgroup that holds `pid`'s memory limit: its
/// v1 memory cgroup (under /sys/fs/cgroup/memory), or on a pure v2 host
/// its cgroup under /sys/fs/cgroup. None when it has neither.
pub fn memory_cgroup_dir(pid: i64) -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            Some(Path::new("/sys/fs/cgroup/memory").join(path))
        } else if controllers.is_empty() && v2 {
            Some(Path::new("/sys/fs/cgroup").join(path))
        } else {
            None
        }
    })
}
