//! `paddock exec` in the daemon: the request is checked against what
//! runs, the command entered into the sandbox (`sandbox::enter`), and the
//! connection kept until it ends, passing the client's signals on and
//! answering with its exit status. Every exec is logged (the workload, the
//! command, the entered process's pid) and so is its end; only root may
//! ask (the control socket's peer check).

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::executor::Executor;
use super::server::Control;
use super::store::Store;
use super::supervisor::Supervisor;
use crate::model::WorkloadName;
use crate::protocol::{ExecInput, ExecRequest, Response};
use crate::reconcile::State;
use crate::sandbox::enter::Entry;

impl<E: Executor, S: Store> Supervisor<E, S> {
    /// Enters `request.command` into the running workload it names.
    pub fn exec(
        &mut self,
        request: &ExecRequest,
        stdio: [OwnedFd; 3],
    ) -> Result<crate::sandbox::enter::Entered, String> {
        let name = WorkloadName::try_from(request.name.as_str()).map_err(|_| {
            let asked = crate::model::quoted(&request.name);
            format!("no workload {asked:?}: a workload name is its manifest's file name")
        })?;
        let w = self.core.get(&name).filter(|w| w.desired.is_some() || w.state.has_sandbox()).ok_or_else(|| {
            format!(
                "no workload {:?}: there is no valid manifest {} (see `paddock status`)",
                request.name,
                self.workloads.join(format!("{}.toml", request.name)).display()
            )
        })?;
        let (State::Running { .. }, Some(manifest)) = (w.state, w.running_manifest()) else {
            return Err(format!(
                "{name} is {}, not running: exec enters a running workload (`paddock status {name}` says why)",
                w.state_name()
            ));
        };
        let manifest = manifest.clone();
        // Ids the workload's user namespace maps, never "unchanged" (-1),
        // which would leave the entered process with the daemon's host uid 0.
        let size = match manifest.namespaces.remapped() {
            true => self.store.slice(&name).map_or(0, |s| s.uid.count.min(s.gid.count)),
            false => u32::MAX,
        };
        for (what, id) in [("user", request.user), ("group", request.group)] {
            if let Some(id) = id
                && id >= size
            {
                return Err(format!(
                    "--user: {what} {id} is outside {name}'s ids (0 to {}): root inside is 0",
                    size.saturating_sub(1)
                ));
            }
        }
        let entry = Entry {
            command: request.command.clone(),
            user: request.user,
            group: request.group,
            env: request.env.clone(),
            workdir: request.workdir.as_ref().map(Into::into),
        };
        let child = self
            .executor
            .enter(&name, &manifest, &entry, request.tty, stdio)
            .map_err(|e| format!("cannot enter {name}: {e}"))?;
        Ok(child)
    }
}

/// Exec sessions at once: the rest of the control socket's connections
/// stay free for status and the other commands.
const MAX_SESSIONS: usize = 32;
static SESSIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_SESSIONS);

/// After its client went away (SIGHUP sent), how long a command has before it is killed.
const HANGUP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest line a client may send while its command runs (a signal is a few bytes).
const MAX_INPUT_LINE: usize = 256;

/// A pipe, a socket, a pseudo-terminal (`paddock exec -t` makes one), or
/// one of the memory devices that hold nothing of the host's (/dev/null,
/// zero, full, random, urandom). Any other character device (/dev/mem,
/// /dev/kmsg, the console, a disk's raw device) would hand the workload
/// the host's, as a directory would its files. Told by its numbers alone:
/// no ioctl reaches the driver of a device a client handed in.
fn is_stream(fd: &OwnedFd) -> bool {
    let allowed = |rdev: libc::dev_t| match libc::major(rdev) {
        1 => matches!(libc::minor(rdev), 3 | 5 | 7 | 8 | 9),
        // Unix98 pseudo-terminals' slaves.
        136..=143 => true,
        _ => false,
    };
    nix::sys::stat::fstat(fd).is_ok_and(|st| match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO | libc::S_IFSOCK => true,
        libc::S_IFCHR => allowed(st.st_rdev),
        _ => false,
    }) && nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).is_ok_and(|flags| flags & libc::O_PATH == 0)
}

/// One `exec` connection, from the request to the command's end.
pub async fn serve(
    stream: UnixStream,
    request: ExecRequest,
    fds: Vec<OwnedFd>,
    tx: mpsc::UnboundedSender<Control>,
    unanswered: super::server::Unanswered,
) {
    // Who asked, for the log (the `paddock exec` process, or another root client).
    let client = stream.peer_cred().ok().and_then(|c| c.pid());
    let (read, mut write) = stream.into_split();
    // A client that does not read its answer is let go, as any other is:
    // it would hold an exec session, and a connection, for as long.
    let mut say = async |response: &Response| {
        if let Ok(mut bytes) = serde_json::to_vec(response) {
            bytes.push(b'\n');
            let _ = tokio::time::timeout(super::server::WRITE_TIMEOUT, write.write_all(&bytes)).await;
        }
    };
    let Ok::<[OwnedFd; 3], _>(stdio) = fds.try_into() else {
        say(&Response::Error("exec needs three descriptors: stdin, stdout and stderr".to_owned())).await;
        return;
    };
    // Streams only: a directory or an O_PATH handle would be a way out of the sandbox.
    if let Some(bad) = stdio.iter().position(|fd| !is_stream(fd)) {
        say(&Response::Error(format!(
            "exec's descriptor {bad} is not a pipe, socket, terminal or /dev/null (a device or a file would be the host's, handed to the workload): pipe it in with `cat FILE |`"
        )))
        .await;
        return;
    }
    // Sessions that outlive their clients cannot take every connection.
    let Ok(_session) = SESSIONS.try_acquire() else {
        say(&Response::Error(format!("{MAX_SESSIONS} exec sessions run already: wait for one to end"))).await;
        return;
    };
    if request.command.is_empty() {
        say(&Response::Error("exec needs a command".to_owned())).await;
        return;
    }
    let (name, command, tty) = (request.name.clone(), request.command.clone(), request.tty);
    let (reply, answer) = oneshot::channel();
    if tx.send(Control::Exec(request, stdio, reply)).is_err() {
        return;
    }
    let mut child = match answer.await {
        Ok(Ok(child)) => child,
        Ok(Err(message)) => return say(&Response::Error(message)).await,
        Err(_) => return say(&Response::Error("the daemon is shutting down".to_owned())).await,
    };
    let pid = child.id() as i32;
    tracing::info!(workload = %name, action = "exec", pid, client, ?command, tty, "exec");
    say(&Response::Entered { pid }).await;
    // The session goes on; an upgrade's exec ends it.
    drop(unanswered);
    let ended = match crate::sandbox::pidfd_open(pid) {
        Ok(pidfd) => wait(pidfd, read, pid).await,
        Err(_) => Ok(()),
    };
    let status = super::workers::blocking(move || child.wait()).await;
    let code = match status {
        Ok(Ok(status)) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(libc::SIGKILL)),
        _ => 125,
    };
    tracing::info!(workload = %name, action = "exec", pid, client, code, "exec ended");
    if ended.is_ok() {
        say(&Response::Ended { code }).await;
    }
}

/// Until the process that entered the sandbox exits: the client's
/// signals are passed on, and a client that goes away (or sends more than
/// signals) hangs it up (SIGHUP, as a closed terminal would), then kills
/// it after `HANGUP_GRACE`.
async fn wait(pidfd: OwnedFd, read: tokio::net::unix::OwnedReadHalf, pid: i32) -> Result<(), ()> {
    use tokio::io::AsyncBufReadExt as _;
    // SAFETY: the AsyncFd owns the pidfd, which nothing else closes.
    let exited = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|_| ())?;
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, u64::MAX));
    let mut line = Vec::new();
    let mut gone: Option<tokio::time::Instant> = None;
    let signal = |s| {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s);
    };
    loop {
        reader.get_mut().set_limit((MAX_INPUT_LINE + 1 - line.len().min(MAX_INPUT_LINE)) as u64);
        tokio::select! {
            _ = exited.readable() => return if gone.is_none() { Ok(()) } else { Err(()) },
            _ = tokio::time::sleep_until(gone.unwrap_or_else(tokio::time::Instant::now)), if gone.is_some() => {
                // SIGKILL to the process that entered: its command dies with it (PR_SET_PDEATHSIG).
                signal(nix::sys::signal::Signal::SIGKILL);
                gone = Some(tokio::time::Instant::now() + HANGUP_GRACE);
            }
            read = reader.read_until(b'\n', &mut line), if gone.is_none() => match read {
                Ok(n) if n > 0 && line.ends_with(b"\n") => {
                    if let Ok(input) = serde_json::from_slice::<ExecInput>(&line)
                        && let Ok(s) = nix::sys::signal::Signal::try_from(input.signal)
                    {
                        signal(s);
                    }
                    line.clear();
                }
                Ok(n) if n > 0 && line.len() <= MAX_INPUT_LINE => {}
                _ => {
                    gone = Some(tokio::time::Instant::now() + HANGUP_GRACE);
                    signal(nix::sys::signal::Signal::SIGHUP);
                }
            },
        }
    }
}
