//! Reaching into a running sandbox from the daemon: `paddock exec`'s
//! process, and health probes. A TCP or HTTP probe connects from inside
//! the workload's network namespace (its socket is made there, on a
//! thread that joins namespaces for nothing else, then used from the
//! event loop); a command probe is entered as `paddock exec` enters.
//! Nothing here blocks the loop: every probe ends at its timeout.

use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::executor::SandboxEvent;
use crate::model::{Manifest, Probe, WorkloadName};
use crate::sandbox::enter::{self, EnterConfig, Entry};

/// A running sandbox, as one enters it: its init and its cgroup.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: i32,
    pub cgroup: Vec<PathBuf>,
    /// A pidfd of the init, checked to be it (its pid may be reused once it is reaped).
    pub pidfd: std::sync::Arc<OwnedFd>,
}

/// The most of a probe's output kept (its end).
const OUTPUT: usize = 1024;

/// Starts `entry` inside the sandbox, with `stdio` as its stdin, stdout
/// and stderr; with a `time_limit` (a probe's), the command's process
/// group is killed once it passes, and when the command ends. The process
/// returned is `paddock __enter`, outside the sandbox's pid namespace; it
/// exits as the command does.
pub fn enter(
    name: &WorkloadName,
    target: &Target,
    manifest: &Manifest,
    entry: &Entry,
    tty: bool,
    stdio: [OwnedFd; 3],
    time_limit: Option<Duration>,
) -> std::io::Result<enter::Entered> {
    let config = EnterConfig {
        pid: target.pid,
        workload: enter::workload(name, manifest, entry),
        cgroup: target.cgroup.clone(),
        tty,
        time_limit,
    };
    enter::start(&config, &target.pidfd, stdio)
}

/// How long past a command probe's timeout `__enter` is given to kill the
/// command's group and end, before it is killed itself.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Makes one probe; its result is sent as `SandboxEvent::Probed`.
pub fn start(
    events: mpsc::UnboundedSender<SandboxEvent>,
    name: WorkloadName,
    target: Target,
    manifest: &Manifest,
    probe: Probe,
    timeout: Duration,
) {
    let pid = target.pid;
    let who = name.clone();
    let report = move |outcome: Result<String, String>| {
        let (ok, output) = match outcome {
            Ok(output) => (true, output),
            Err(output) => (false, output),
        };
        let _ = events.send(SandboxEvent::Probed { name, pid, ok, output });
    };
    match probe {
        Probe::Tcp(port) => {
            let init = target.pidfd.clone();
            tokio::spawn(async move { report(connect(init, port, None, timeout).await) });
        }
        Probe::Http { port, path } => {
            let init = target.pidfd.clone();
            tokio::spawn(async move { report(connect(init, port, Some(path), timeout).await) });
        }
        Probe::Command(command) => {
            let entry = Entry { command, ..Entry::default() };
            let started = (|| {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                let null = OwnedFd::from(std::fs::File::open("/dev/null")?);
                let stdio = [null, write.try_clone()?, write];
                let child = enter(&who, &target, manifest, &entry, false, stdio, Some(timeout))?;
                Ok::<_, std::io::Error>((child, read))
            })();
            match started {
                Err(e) => report(Err(format!("cannot start the probe: {e}"))),
                // Held until the probe is heard: while it is, `__enter` runs on.
                Ok((mut entered, read)) => {
                    tokio::spawn(super::workers::blocking(move || report(finish(&mut entered, read, timeout))));
                }
            }
        }
    }
}

/// Waits for a command probe: its output (the end of it), and whether it
/// exited 0 within `timeout` (else it is killed).
fn finish(child: &mut std::process::Child, read: OwnedFd, timeout: Duration) -> Result<String, String> {
    let begun = Instant::now();
    // `__enter` kills the command's group at the timeout and ends.
    let deadline = begun + timeout + KILL_GRACE;
    let too_long = || format!("timed out after {}", crate::model::Duration::from_millis(timeout.as_millis() as u64));
    let mut pipe = std::fs::File::from(read);
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    let timed_out = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break true;
        }
        let mut fds = [nix::poll::PollFd::new(pipe.as_fd(), nix::poll::PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => match pipe.read(&mut buf) {
                Ok(0) => break false,
                Ok(n) => {
                    output.extend_from_slice(&buf[..n]);
                    let excess = output.len().saturating_sub(OUTPUT);
                    output.drain(..excess);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            },
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&output).trim_end().to_owned();
    // Its output closed, it may still run (a command that closes its
    // stdout and stderr): its end is waited for within the same deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    if timed_out || !crate::sandbox::process::ends_within(child, left) {
        // Its command dies with it (PR_SET_PDEATHSIG).
        let _ = child.kill();
        let _ = child.wait();
        return Err(too_long());
    }
    match child.wait() {
        Ok(status) if status.success() => Ok(text),
        // Killed by `__enter` at the timeout.
        Ok(status) if begun.elapsed() >= timeout && status.code() == Some(128 + libc::SIGKILL) => Err(too_long()),
        Ok(status) => {
            let code = status.code().map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"));
            Err(if text.is_empty() { code } else { format!("{code}: {text}") })
        }
        Err(e) => Err(format!("waiting for the probe: {e}")),
    }
}

/// Connects to 127.0.0.1:`port` in the network namespace of the init
/// `init`; with a path, GETs it and wants a status from 200 to 399.
async fn connect(init: Arc<OwnedFd>, port: u16, path: Option<String>, timeout: Duration) -> Result<String, String> {
    let attempt = async {
        let socket = socket_in(init).await.map_err(|e| format!("cannot make a socket in its network: {e}"))?;
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = socket.connect(address).await.map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
        let Some(path) = path else { return Ok(format!("127.0.0.1:{port} accepted the connection")) };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: paddock\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("sending the request: {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 4096 {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("reading the answer: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_owned();
        match line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()) {
            Some(code) if (200..400).contains(&code) => Ok(line),
            Some(_) => Err(line),
            None => Err(format!("not an HTTP answer: {line:?}")),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("timed out after {}", crate::model::Duration::from_millis(timeout.as_millis() as u64))),
    }
}

type SocketRequest = (Arc<OwnedFd>, oneshot::Sender<std::io::Result<OwnedFd>>);

/// A TCP socket made in the network namespace of the init `init` (a
/// socket stays in the namespace it was made in, whichever thread uses it).
async fn socket_in(init: Arc<OwnedFd>) -> std::io::Result<tokio::net::TcpSocket> {
    // Started at the first probe that needs it; when no thread can be had
    // (the host out of processes), that probe fails, and the next tries again.
    static MAKER: Mutex<Option<std_mpsc::Sender<SocketRequest>>> = Mutex::new(None);
    let gone = || std::io::Error::other("the probe socket thread is gone");
    let maker = {
        let mut maker = MAKER.lock().map_err(|_| gone())?;
        if maker.is_none() {
            let (tx, rx) = std_mpsc::channel::<SocketRequest>();
            std::thread::Builder::new().name("probe-sockets".into()).spawn(move || {
                // Gone back to after each socket: the namespace it was in
                // last would otherwise live on with it, its workload gone.
                let home = std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from);
                for (init, reply) in rx {
                    let made = make_socket(&init);
                    if let Ok(home) = &home {
                        let _ = nix::sched::setns(home, nix::sched::CloneFlags::CLONE_NEWNET);
                    }
                    let _ = reply.send(made);
                }
            })?;
            *maker = Some(tx);
        }
        maker.clone().ok_or_else(gone)?
    };
    let (reply, answer) = oneshot::channel();
    maker.send((init, reply)).map_err(|_| gone())?;
    let fd = answer.await.map_err(|_| gone())??;
    // SAFETY: a TCP socket just made, owned by nothing else.
    let socket = unsafe { tokio::net::TcpSocket::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    Ok(socket)
}

/// On the socket thread: join the init's network namespace (this thread
/// only, and only ever to make sockets) and make a non-blocking socket.
fn make_socket(init: &OwnedFd) -> std::io::Result<OwnedFd> {
    nix::sched::setns(init, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe's command that closes its output and lingers is timed out
    /// at its deadline, not waited for to its end.
    #[test]
    fn a_probe_whose_output_closes_still_ends_at_its_deadline() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "exec >&- 2>&-; sleep 5"])
            .stdout(std::process::Stdio::from(write.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(write))
            .spawn()
            .unwrap();
        let begun = Instant::now();
        let outcome = finish(&mut { child }, read, Duration::from_millis(300));
        assert_eq!(outcome, Err("timed out after 300ms".to_owned()));
        assert!(begun.elapsed() < Duration::from_secs(3), "waited {:?}", begun.elapsed());
        // And one that ends in time is heard as before.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "echo fine"])
            .stdout(std::process::Stdio::from(write))
            .spawn()
            .unwrap();
        assert_eq!(finish(&mut { child }, read, Duration::from_secs(5)), Ok("fine".to_owned()));
    }
}
