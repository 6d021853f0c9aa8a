//! `paddock exec` in the daemon: the request is checked against what
//! runs, the command entered into the sandbox (`sandbox::enter`), and the
//! connection kept until it ends, passing the client's signals on and
//! answering with its exit status. Every exec is logged, with who asked.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
    pub fn exec(&mut self, request: &ExecRequest, stdio: [OwnedFd; 3]) -> Result<std::process::Child, String> {
        let name = WorkloadName::try_from(request.name.as_str())
            .map_err(|_| format!("no workload {:?}: a workload name is its manifest's file name", request.name))?;
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
        tracing::info!(workload = %name, action = "exec", pid = child.id(), command = ?request.command, tty = request.tty, "exec");
        Ok(child)
    }
}

/// One `exec` connection, from the request to the command's end.
pub async fn serve(stream: UnixStream, request: ExecRequest, fds: Vec<OwnedFd>, tx: mpsc::UnboundedSender<Control>) {
    let (read, mut write) = stream.into_split();
    let mut say = async |response: &Response| {
        if let Ok(mut bytes) = serde_json::to_vec(response) {
            bytes.push(b'\n');
            let _ = write.write_all(&bytes).await;
        }
    };
    let Ok::<[OwnedFd; 3], _>(stdio) = fds.try_into() else {
        say(&Response::Error("exec needs three descriptors: stdin, stdout and stderr".to_owned())).await;
        return;
    };
    if request.command.is_empty() {
        say(&Response::Error("exec needs a command".to_owned())).await;
        return;
    }
    let name = request.name.clone();
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
    say(&Response::Entered { pid }).await;
    let ended = match crate::sandbox::pidfd_open(pid) {
        Ok(pidfd) => wait(pidfd, read, pid).await,
        Err(_) => Ok(()),
    };
    let status = tokio::task::spawn_blocking(move || child.wait()).await;
    let code = match status {
        Ok(Ok(status)) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(libc::SIGKILL)),
        _ => 125,
    };
    tracing::info!(workload = %name, action = "exec", pid, code, "exec ended");
    if ended.is_ok() {
        say(&Response::Ended { code }).await;
    }
}

/// Until the process that entered the sandbox exits: the client's
/// signals are passed on, and a client that goes away hangs it up
/// (SIGHUP, as a closed terminal would).
async fn wait(pidfd: OwnedFd, read: tokio::net::unix::OwnedReadHalf, pid: i32) -> Result<(), ()> {
    // SAFETY: the AsyncFd owns the pidfd, which nothing else closes.
    let exited = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|_| ())?;
    let mut lines = BufReader::new(read).lines();
    let mut client = true;
    loop {
        tokio::select! {
            _ = exited.readable() => return if client { Ok(()) } else { Err(()) },
            line = lines.next_line(), if client => match line {
                Ok(Some(line)) => {
                    if let Ok(input) = serde_json::from_str::<ExecInput>(&line)
                        && let Ok(signal) = nix::sys::signal::Signal::try_from(input.signal)
                    {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
                    }
                }
                _ => {
                    client = false;
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP);
                }
            },
        }
    }
}
