//! A real `paddock daemon` in temp directories, driven through its files,
//! its signals and its socket. (Root and user namespaces required.)
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::sandbox::require_root;

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// A soft open-files limit to start the daemon with.
    pub nofile_soft: Option<u64>,
    /// And a hard one (which it then cannot raise past).
    pub nofile_hard: Option<u64>,
    /// A cgroup's `cgroup.procs`, opened for writing: the daemon starts in
    /// that cgroup (as systemd starts a service in its unit's).
    pub cgroup_procs: Option<std::fs::File>,
    /// Start the daemon with a descriptor (7, its stderr) without
    /// FD_CLOEXEC, as a careless parent would leave one.
    pub stray_fd: bool,
    /// Run the daemon from this binary instead of the build's (to replace it).
    pub binary: Option<PathBuf>,
    /// A network namespace made by the test to be the daemon's "host"
    /// network: networking tests touch nothing of the real host's.
    pub host_netns: Option<PathBuf>,
    /// Start the daemon in a mount namespace of its own (a slave of the
    /// test's), as a unit's ProtectSystem= or PrivateTmp= would.
    pub own_mounts: bool,
}

impl Daemon {
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn setup() -> Self {
        require_root();
        let dir = tempfile::Builder::new().prefix("paddock-daemon").tempdir().unwrap();
        let d = Daemon {
            dir,
            child: None,
            nofile_soft: None,
            nofile_hard: None,
            cgroup_procs: None,
            stray_fd: false,
            binary: None,
            host_netns: None,
            own_mounts: false,
        };
        std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(d.path("wl")).unwrap();
        // The daemon's log and the tests' files go in out/, not beside wl/.
        std::fs::create_dir(d.path("out")).unwrap();
        std::fs::set_permissions(d.path("wl"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy("/etc/passwd", d.path("passwd")).unwrap();
        std::fs::copy("/etc/group", d.path("group")).unwrap();
        std::fs::write(d.path("subuid"), "").unwrap();
        std::fs::write(d.path("subgid"), "").unwrap();
        let p = |f: &str| d.path(f).display().to_string();
        let config = format!(
            "workloads = {:?}\nstate_dir = {:?}\nsocket = {:?}\nrun_dir = {:?}\npolicy_dir = \"/nonexistent\"\nvolumes_root = {:?}\n[remap]\nsubuid = {:?}\nsubgid = {:?}\npasswd = {:?}\ngroup = {:?}\n[network]\nnetworks_dir = {:?}\n",
            p("wl"),
            p("state"),
            p("paddock.sock"),
            p("run"),
            p("volumes"),
            p("subuid"),
            p("subgid"),
            p("passwd"),
            p("group"),
            p("networks")
        );
        std::fs::write(d.path("paddock.toml"), config).unwrap();
        d
    }

    /// Replaces a line of the configuration (for tests that need another setting).
    pub fn configure(&self, from: &str, to: &str) {
        let path = self.path("paddock.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from} is not in the configuration");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    /// `paddock daemon` with this configuration and `args`, run to its
    /// end (for a start that is refused): its exit status and stderr.
    pub fn run_refused(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["daemon", "--config"])
            .arg(self.path("paddock.toml"))
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Gives the daemon a network namespace of its own as its "host": its
    /// bridge, addresses, routes and firewall rules are made there.
    pub fn with_own_network(mut self) -> Self {
        let path = self.path("hostns");
        paddock::sandbox::netns::create(&path).unwrap();
        self.host_netns = Some(path);
        self
    }

    /// Runs `f` on a thread in the daemon's "host" network namespace.
    pub fn on_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.host_netns.clone().expect("with_own_network");
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Runs a program in the daemon's "host" network namespace.
    pub fn host_command(&self, program: &str, args: &[&str]) -> std::process::Output {
        let path = self.host_netns.clone().expect("with_own_network");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", path.display())).arg("--").arg(program).args(args);
        cmd.output().unwrap()
    }

    pub fn start(self, env: &[(&str, &str)]) -> Self {
        self.start_with(&[], env)
    }

    pub fn start_with(self, args: &[&str], env: &[(&str, &str)]) -> Self {
        let d = self.launch(args, env);
        d.wait_for("the control socket", answers);
        d
    }

    /// Starts `paddock daemon` and returns at once, not waiting for its
    /// control socket (for a start that is meant to stall or fail).
    pub fn launch(mut self, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(self.binary.clone().unwrap_or_else(|| env!("CARGO_BIN_EXE_paddock").into()));
        cmd.args(["daemon"])
            .args(args)
            .arg("--config")
            .arg(self.path("paddock.toml"))
            .stderr(Stdio::from(std::fs::File::create(self.path("out/daemon.log")).unwrap()));
        cmd.envs(env.iter().copied());
        if let Some(soft) = self.nofile_soft {
            use std::os::unix::process::CommandExt;
            let hard = self.nofile_hard;
            // SAFETY: getrlimit and setrlimit are async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(move || {
                    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
                    l.rlim_max = hard.unwrap_or(l.rlim_max);
                    l.rlim_cur = soft.min(l.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &l);
                    Ok(())
                })
            };
        }
        if self.own_mounts {
            use std::os::unix::process::CommandExt;
            // SAFETY: unshare(2) and mount(2) are async-signal-safe, as
            // pre_exec requires; the strings are static.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            c"none".as_ptr(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_SLAVE,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                })
            };
        }
        if let Some(procs) = &self.cgroup_procs {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = procs.as_raw_fd();
            // SAFETY: write(2) is async-signal-safe, as pre_exec requires; "0"
            // in cgroup.procs moves the writing process itself.
            unsafe {
                cmd.pre_exec(move || match libc::write(fd, b"0".as_ptr().cast(), 1) {
                    1 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                })
            };
        }
        if let Some(path) = &self.host_netns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let ns = std::fs::File::open(path).unwrap();
            let fd = ns.as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe, as pre_exec requires;
            // `ns` outlives the spawn below.
            unsafe {
                cmd.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                })
            };
            self.child = Some(cmd.spawn().unwrap());
            drop(ns);
            return self;
        }
        if self.stray_fd {
            use std::os::unix::process::CommandExt;
            // SAFETY: dup2 is async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(|| match libc::dup2(2, 7) {
                    7 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                })
            };
        }
        self.child = Some(cmd.spawn().unwrap());
        self
    }

    pub fn write(&self, name: &str, text: &str) {
        // As an editor saves: a temporary file renamed over the manifest.
        let tmp = self.path(&format!("wl/.{name}.swp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path(&format!("wl/{name}"))).unwrap();
    }

    pub fn status(&self) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["status", "--json", "--socket"])
            .arg(self.path("paddock.sock"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.path("out/daemon.log")).unwrap_or_default()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `paddock ARGS --socket SOCKET` (a client command) to its end.
    pub fn paddock(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(args)
            .arg("--socket")
            .arg(self.path("paddock.sock"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    pub fn workload(&self, name: &str) -> Option<Value> {
        self.status().into_iter().find(|w| w["name"] == name)
    }

    pub fn wait_for(&self, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                std::fs::read_to_string(self.path("out/daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One status request on the socket, timed (the daemon's answer,
    /// without a client process's start). A stalled daemon fails the
    /// test after 10 s, not hangs it.
    pub fn timed_status(&self) -> (Duration, String) {
        let asked = Instant::now();
        let answer = ask_status(self, Duration::from_secs(10)).expect("the daemon answers status within 10 s");
        (asked.elapsed(), answer)
    }

    pub fn running_pid(&self, name: &str) -> i64 {
        self.wait_for(&format!("{name} running"), |d| d.workload(name).is_some_and(|w| w["state"] == "running"));
        self.workload(name).unwrap()["pid"].as_i64().unwrap()
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it: its
    /// workloads run on, for the next daemon to adopt.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn terminate(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    /// Stops the daemon as an operator would (SIGTERM), so its workloads
    /// stop with it: killed, it would leave them running (they outlive a
    /// daemon that dies, for the next one to adopt).
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(ns) = self.host_netns.take() {
            paddock::sandbox::netns::remove(&ns);
        }
        // Network namespaces the daemon left (a test that killed it).
        for dir in ["run/netns", "run/run/netns"] {
            if let Ok(entries) = std::fs::read_dir(self.path(dir)) {
                for e in entries.flatten() {
                    paddock::sandbox::netns::remove(&e.path());
                }
            }
        }
        // What the test mounted in its directory (a small tmpfs for the
        // state directory): unmounted, deepest first, before the directory
        // is removed, whose removal would stop at a mount point and leave
        // the rest in /tmp (the guard's own unmount comes after this).
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<PathBuf> = info
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|point| point.starts_with(self.dir.path()))
            .collect();
        points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        for point in points {
            let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether the daemon's socket answers a status request. A connection
/// alone is not enough: a killed predecessor leaves its socket file, and a
/// child of it that has not closed its copy of the listening socket yet
/// (a sandbox being cloned when the kill came) still accepts connections
/// that no one will answer.
fn answers(d: &Daemon) -> bool {
    ask_status(d, Duration::from_millis(500)).is_ok_and(|answer| !answer.is_empty())
}

/// A status request on the daemon's socket and its answer's line, read
/// for `timeout` at most.
pub fn ask_status(d: &Daemon, timeout: Duration) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.path("paddock.sock"))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"{\"cmd\": \"status\"}\n")?;
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer)?;
    Ok(answer)
}

pub fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Ended: no such process, or a zombie (whose reaping is its parent's
/// business; a process adopted by the host's PID 1 may stay one a while).
pub fn gone(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

pub const SLEEPER: &str = "command = [\"/bin/sleep\", \"1000\"]\n";

/// Host pids of the processes whose command line is exactly `argv`.
/// The processes running `argv` whose parent (a sandbox's init) writes
/// its output under this test's directory: another test's, or a sandbox an
/// interrupted run left, is not counted.
pub fn own_processes(d: &Daemon, argv: &[&str]) -> Vec<i64> {
    processes(argv)
        .into_iter()
        .filter(|pid| {
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i64>().ok())
            });
            parent.is_some_and(|ppid| {
                std::fs::read_link(format!("/proc/{ppid}/fd/1")).is_ok_and(|out| out.starts_with(d.dir.path()))
            })
        })
        .collect()
}

/// A notify socket a test reads, as systemd's: its directory (kept while
/// it is used), its path, and the socket, each read waiting `timeout` at
/// most.
pub fn notify_socket(timeout: Duration) -> (tempfile::TempDir, PathBuf, std::os::unix::net::UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    (dir, path, sock)
}

/// The parent of `pid`, by /proc.
pub fn parent(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

pub fn processes(argv: &[&str]) -> Vec<i64> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    processes_where(|cmdline| cmdline == wanted)
}

/// Host pids of the processes whose command line (its arguments each
/// ended by a NUL) `wanted` accepts.
pub fn processes_where(wanted: impl Fn(&[u8]) -> bool) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| wanted(&c)))
        .collect()
}

/// A new client of `d`'s control socket that has sent `bytes` with
/// descriptors `fds` (as `paddock exec` sends its stdio), as a raw client
/// would.
pub fn connect_sending(d: &Daemon, bytes: &[u8], fds: &[std::os::fd::RawFd]) -> std::os::unix::net::UnixStream {
    use std::os::fd::AsRawFd;
    let client = std::os::unix::net::UnixStream::connect(d.path("paddock.sock")).unwrap();
    nix::sys::socket::sendmsg::<()>(
        client.as_raw_fd(),
        &[std::io::IoSlice::new(bytes)],
        &[nix::sys::socket::ControlMessage::ScmRights(fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    client
}
