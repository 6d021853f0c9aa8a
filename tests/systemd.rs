//! paddock under a real systemd: a Debian tree booted with systemd as PID 1
//! in a container (systemd-nspawn), paddock installed with install.sh, the
//! unit driven with systemctl. Checked: enable --now reaches active with
//! STATUS= counts; a manifest starts in paddock.service/paddock/NAME;
//! reload rescans; a SIGKILL of the daemon, an upgrade and a watchdog
//! abort each leave the workloads running, adopted with the same pids;
//! stop stops everything. (Root, systemd-container and the tree that
//! tests/systemd/tree.sh builds, which .ci/run makes, are required.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sandbox::require_root;

const TREE: &str = "/var/cache/paddock-tests/bookworm";

struct Container {
    dir: tempfile::TempDir,
    nspawn: Option<Child>,
    /// systemd, PID 1 of the container, as the host sees it.
    init: i32,
    cgroups: Vec<PathBuf>,
    mounted: bool,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            let comm = head.split_once('(')?.1.to_owned();
            (ppid == pid).then_some((p, comm))
        })
        .collect()
}

impl Container {
    fn boot() -> Self {
        require_root();
        for tool in ["systemd-nspawn", "nsenter", "debootstrap"] {
            assert!(
                run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).status.success(),
                "{tool} is needed: apt-get install systemd-container debootstrap (.ci/run does)"
            );
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/systemd/tree.sh");
        let made = run(Command::new(script).arg(TREE));
        assert!(made.status.success(), "building the Debian tree: {}", text(&made));

        let dir = tempfile::Builder::new().prefix("paddock-systemd").tempdir().unwrap();
        let p = |s: &str| dir.path().join(s);
        for d in ["upper", "work", "root"] {
            std::fs::create_dir(p(d)).unwrap();
        }
        // A fresh root on top of the cached tree: the tree stays clean.
        let options = format!("lowerdir={TREE},upperdir={},workdir={}", p("upper").display(), p("work").display());
        nix::mount::mount(
            Some("overlay"),
            &p("root"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap();
        let mut c = Container { dir, nspawn: None, init: 0, cgroups: Vec::new(), mounted: true };
        let root = c.root();
        let installed = run(Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/install.sh"))
            .env("DESTDIR", &root)
            .env("PADDOCK_BIN", env!("CARGO_BIN_EXE_paddock")));
        assert!(installed.status.success(), "install.sh: {}", text(&installed));
        // Quicker than the defaults, so the watchdog and a restart are seen in seconds.
        let dropin = root.join("etc/systemd/system/paddock.service.d");
        std::fs::create_dir_all(&dropin).unwrap();
        std::fs::write(dropin.join("test.conf"), "[Service]\nWatchdogSec=3s\nRestartSec=1s\n").unwrap();

        // A cgroup of its own in each hierarchy, so nspawn makes its
        // payload/ and supervisor/ there and not at the host's roots.
        let hierarchies: Vec<&str> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            vec!["/sys/fs/cgroup"]
        } else {
            ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"].into_iter().filter(|h| Path::new(h).exists()).collect()
        };
        let name = format!("paddock-test-{}", std::process::id());
        let mut procs = Vec::new();
        for h in hierarchies {
            let cg = Path::new(h).join(&name);
            std::fs::create_dir_all(&cg).unwrap();
            procs.push(std::fs::OpenOptions::new().write(true).open(cg.join("cgroup.procs")).unwrap());
            c.cgroups.push(cg);
        }
        let log = std::fs::File::create(c.dir.path().join("nspawn.log")).unwrap();
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["-q", "-D"])
            .arg(&root)
            .args(["-b", "--register=no", "--keep-unit", "--console=read-only", "--link-journal=no"])
            // nspawn's own seccomp filter (systemd 252) refuses pidfd_getfd
            // with EPERM: a successor could not adopt the workloads.
            .arg("--system-call-filter=pidfd_getfd")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let fds: Vec<i32> = procs.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: write(2) is async-signal-safe, as pre_exec requires; "0"
            // moves the writing process into that cgroup.
            unsafe {
                cmd.pre_exec(move || {
                    for fd in &fds {
                        if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                })
            };
        }
        let nspawn = cmd.spawn().unwrap();
        let nspawn_pid = nspawn.id();
        c.nspawn = Some(nspawn);
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.init == 0 {
            c.init = children(nspawn_pid).into_iter().find(|(_, comm)| comm == "systemd").map_or(0, |(p, _)| p);
            assert!(Instant::now() < deadline, "no systemd in the container: {}", c.nspawn_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        // systemctl answers once systemd's own socket is up; then it waits for the boot.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = c.sh("timeout 60 systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&up.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(Instant::now() < deadline, "the container's systemd: {state}\n{}", c.nspawn_log());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn nspawn_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nspawn.log")).unwrap_or_default()
    }

    /// A shell command inside the container (all of its namespaces).
    fn sh(&self, script: &str) -> Output {
        run(Command::new("nsenter").args(["-t", &self.init.to_string(), "-a", "/bin/sh", "-c", script]))
    }

    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "`{script}` failed: {}\njournal:\n{}", text(&out), self.journal());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn journal(&self) -> String {
        text(&self.sh("journalctl -u paddock --no-pager -n 60"))
    }

    fn main_pid(&self) -> String {
        self.ok("systemctl show -p MainPID --value paddock")
    }

    /// `paddock status --json` inside, parsed.
    fn status(&self) -> Vec<serde_json::Value> {
        let out = self.sh("paddock status --json");
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}\njournal:\n{}", self.journal());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The workload's pid inside the container, once it runs.
    fn running(&self, name: &str) -> i64 {
        self.wait_for(&format!("{name} running"), |c| {
            c.status().iter().any(|w| w["name"] == name && w["state"] == "running")
        });
        self.status().iter().find(|w| w["name"] == name).unwrap()["pid"].as_i64().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            if self.init != 0 {
                let _ = self.sh("systemctl poweroff");
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while nspawn.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        if self.mounted {
            let _ = nix::mount::umount2(&self.root(), nix::mount::MntFlags::MNT_DETACH);
        }
        for cg in self.cgroups.iter().rev() {
            remove_cgroup_tree(cg);
        }
    }
}

/// Removes a cgroup and every cgroup below it, the deepest first (nspawn
/// makes payload/ and supervisor/, and the container's systemd makes its
/// own below payload/, such as init.scope, which a poweroff can leave).
fn remove_cgroup_tree(top: &Path) {
    fn below(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                below(&entry.path(), found);
                found.push(entry.path());
            }
        }
    }
    let mut all = Vec::new();
    below(top, &mut all);
    all.push(top.to_path_buf());
    for cg in all {
        let _ = std::fs::remove_dir(&cg);
    }
}

#[test]
fn paddock_under_systemd_keeps_its_workloads_through_kills_upgrades_and_watchdog_aborts() {
    let c = Container::boot();
    c.ok("systemctl daemon-reload && systemctl enable --now paddock");
    assert_eq!(c.ok("systemctl is-active paddock"), "active");
    // The daemon shares systemd's mount namespace: the network namespaces
    // it keeps mounted under RUN_DIR/netns outlive it, so a restarted
    // daemon finds them (a unit option that gives it a namespace of its
    // own, such as ProtectKernelModules=, would lose them at every crash).
    let namespaces = c.ok("readlink /proc/1/ns/mnt /proc/$(systemctl show -p MainPID --value paddock)/ns/mnt");
    let namespaces: Vec<&str> = namespaces.lines().collect();
    assert_eq!(namespaces.len(), 2, "{namespaces:?}");
    assert_eq!(namespaces[0], namespaces[1], "paddock.service runs in a mount namespace of its own");
    // No task limit shared by the workloads and the daemon.
    assert_eq!(c.ok("systemctl show -p TasksMax --value paddock"), "infinity");
    std::fs::write(c.root().join("etc/paddock/workloads/web.toml"), "command = [\"/bin/sleep\", \"100000\"]\n")
        .unwrap();
    let web = c.running("web");
    let cgroup = c.ok(&format!("cat /proc/{web}/cgroup"));
    assert!(cgroup.contains("/paddock.service/paddock/web"), "{cgroup}");
    c.wait_for("STATUS= counts", |c| c.ok("systemctl show -p StatusText --value paddock").starts_with("1 running"));

    // The journal gets native entries: priorities, one entry per event
    // however many lines, and fields to filter on.
    std::fs::write(c.root().join("etc/paddock/workloads/bad.toml"), "command = 1\n").unwrap();
    c.wait_for("the invalid manifest in the journal", |c| {
        c.ok("journalctl -u paddock -p err --no-pager -o cat").contains("invalid manifest")
    });
    let entries: Vec<serde_json::Value> = c
        .ok("journalctl -u paddock -p err --no-pager -o json")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let message = |e: &serde_json::Value| match &e["MESSAGE"] {
        serde_json::Value::Array(bytes) => bytes.iter().filter_map(|b| b.as_u64()).map(|b| b as u8 as char).collect(),
        other => other.as_str().unwrap_or("").to_owned(),
    };
    let bad: Vec<&serde_json::Value> = entries.iter().filter(|e| message(e).contains("invalid manifest")).collect();
    assert_eq!(bad.len(), 1, "one entry: {entries:?}");
    assert!(message(bad[0]).contains("bad.toml:1:"), "the problem is in the same entry: {}", message(bad[0]));
    assert_eq!(bad[0]["PRIORITY"], "3", "an error is priority 3");
    let started = c.ok("journalctl -u paddock --no-pager -o cat WORKLOAD=web");
    assert!(started.contains("started"), "WORKLOAD= filters: {started}");
    // The text says which workload, as stderr does (it said "started").
    assert!(started.contains("started workload=web action=\"start\" pid="), "{started}");
    std::fs::remove_file(c.root().join("etc/paddock/workloads/bad.toml")).unwrap();

    // reload rescans.
    std::fs::write(c.root().join("etc/paddock/workloads/api.toml"), "command = [\"/bin/sleep\", \"100001\"]\n")
        .unwrap();
    c.ok("systemctl reload paddock");
    let api = c.running("api");

    // The daemon killed: the workloads run on, and the restarted daemon adopts them.
    let first = c.main_pid();
    c.ok("systemctl kill -s KILL --kill-whom=main paddock");
    c.wait_for("a new daemon", |c| {
        let pid = c.main_pid();
        pid != first && pid != "0" && c.ok("systemctl is-active paddock || true") == "active"
    });
    assert_eq!((c.running("web"), c.running("api")), (web, api), "adopted after a SIGKILL, same pids\n{}", c.journal());

    // An upgrade: the binary replaced as a package would, then reload.
    let before = c.main_pid();
    c.ok("cp /usr/bin/paddock /usr/bin/paddock.new && mv /usr/bin/paddock.new /usr/bin/paddock");
    c.ok("systemctl reload paddock");
    c.wait_for("the new binary", |c| !c.ok(&format!("readlink /proc/{before}/exe")).contains("deleted"));
    assert_eq!(c.main_pid(), before, "an upgrade keeps the daemon's pid");
    assert_eq!((c.running("web"), c.running("api")), (web, api), "and every workload");

    // A watchdog abort: the daemon stops answering; systemd aborts and restarts it.
    let stuck = c.main_pid();
    c.ok(&format!("kill -STOP {stuck}"));
    c.wait_for("the watchdog's restart", |c| {
        let pid = c.main_pid();
        pid != stuck && pid != "0" && c.ok("systemctl is-active paddock || true") == "active"
    });
    assert_eq!((c.running("web"), c.running("api")), (web, api), "adopted after a watchdog abort");
    assert!(c.journal().contains("adopted"), "{}", c.journal());

    // stop stops everything, gracefully.
    c.ok("systemctl stop paddock");
    assert_eq!(c.ok("systemctl is-active paddock || true"), "inactive");
    assert_eq!(c.ok("pgrep -x sleep | wc -l"), "0", "a workload outlived `systemctl stop`");

    // Gone, the container leaves none of its cgroups on the host.
    let cgroups = c.cgroups.clone();
    drop(c);
    let left: Vec<_> = cgroups.iter().filter(|cg| cg.exists()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}
