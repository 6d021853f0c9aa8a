//! The signals the daemon's loop acts on (SIGTERM and SIGINT stop every
//! workload, SIGHUP rescans) are never lost, and never take their default
//! action, which would end the daemon and leave its workloads unsupervised.
//!
//! They are blocked from the daemon's start (`hold`, in `main` before
//! anything else, while it is one thread: every thread it makes inherits
//! the mask), and no handler is installed: one thread of their own takes
//! them from the kernel (`sigwaitinfo`, sleeping until one comes) and
//! hands them to the loop (`Taker`). What comes before the loop listens (the recovery of a
//! predecessor's sandboxes) waits, pending. An upgrade has that thread
//! stop taking them (`Taker::pause`): from then on each is either in the
//! loop's channel or pending in the kernel, and the upgrade looks at both
//! before it execs (a stop asked meanwhile abandons the upgrade).

use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc;

use nix::sys::signal::Signal;

use crate::sandbox::{daemon_signals, daemon_wake_signal};

/// The signals the loop handles.
pub const HANDLED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Blocks the daemon's signals (`sys::daemon_signals`) in the calling
/// thread, and so in every thread it makes from now on, and gives the
/// handled ones back their default action (`release` ignored them, and
/// an ignored disposition outlives an exec); blocked, they wait to be
/// taken.
pub fn hold() {
    let set = daemon_signals();
    // SAFETY: pthread_sigmask on a set on our stack; signal(2) with the
    // default disposition.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        for signal in HANDLED {
            libc::signal(signal as libc::c_int, libc::SIG_DFL);
        }
    }
}

/// Ignores, then unblocks, the handled ones in the calling thread: right
/// before an upgrade's exec, for a next image that does not hold them
/// itself (a paddock older than this one, which never unblocks them);
/// one that comes before the next image holds them is dropped, not fatal.
/// The wake signal stays blocked: its default action would end the
/// process.
pub fn release() {
    let mut set = nix::sys::signal::SigSet::empty();
    HANDLED.iter().for_each(|s| set.add(*s));
    // SAFETY: signal(2) with SIG_IGN.
    unsafe {
        for signal in HANDLED {
            libc::signal(signal as libc::c_int, libc::SIG_IGN);
        }
    }
    let _ = nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK, Some(&set), None);
}

/// Waits for one of the daemon's signals (none: `take_pending`'s zero
/// timeout), and takes it.
fn take(timeout: Option<&libc::timespec>) -> Option<libc::c_int> {
    let set = daemon_signals();
    let timeout = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: sigtimedwait on a set on our stack, with no info asked, and
    // a timeout that lives across the call or none (wait until one comes).
    let signal = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), timeout) };
    (signal > 0).then_some(signal)
}

/// One of the handled signals pending for the process or this thread,
/// taken (none waits).
pub fn take_pending() -> Option<Signal> {
    let none = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    loop {
        let signal = take(Some(&none))?;
        // A stale wake-up is no signal of the operator's.
        if signal != daemon_wake_signal() {
            return Signal::try_from(signal).ok();
        }
    }
}

enum Ask {
    Pause(mpsc::Sender<()>),
    Resume,
}

/// The thread that takes the handled signals and hands them to the loop.
pub struct Taker {
    asks: mpsc::Sender<Ask>,
    thread: std::os::unix::thread::RawPthread,
}

impl Taker {
    /// Starts the thread: what is pending is handed over first.
    pub fn start(to: tokio::sync::mpsc::UnboundedSender<Signal>) -> std::io::Result<Self> {
        let (asks, asked) = mpsc::channel::<Ask>();
        let thread = std::thread::Builder::new().name("paddock-signals".into()).spawn(move || {
            loop {
                let Some(signal) = take(None) else { continue };
                if signal == daemon_wake_signal() {
                    // Asked to pause (or a stale wake-up): until resumed,
                    // nothing takes them, and they stay pending.
                    if let Ok(Ask::Pause(done)) = asked.try_recv() {
                        let _ = done.send(());
                        loop {
                            match asked.recv() {
                                Ok(Ask::Resume) => break,
                                Ok(Ask::Pause(done)) => drop(done.send(())),
                                Err(_) => return,
                            }
                        }
                    }
                    continue;
                }
                if let Ok(signal) = Signal::try_from(signal)
                    && to.send(signal).is_err()
                {
                    return;
                }
            }
        })?;
        Ok(Self { asks, thread: thread.as_pthread_t() })
    }

    /// Stops taking them; returns once the thread has stopped (what it
    /// took is in the loop's channel, what comes stays pending).
    pub fn pause(&self) {
        let (done, answered) = mpsc::channel();
        if self.asks.send(Ask::Pause(done)).is_ok() {
            // SAFETY: the thread is ours, and runs while the loop can
            // pause it: it returns only once the loop's receiver is gone
            // (the loop is over) or, paused, once this handle is.
            // (A pthread_t is an integer to glibc and a pointer to musl.)
            unsafe { libc::pthread_kill(self.thread as libc::pthread_t, daemon_wake_signal()) };
            let _ = answered.recv();
        }
    }

    /// Takes them again.
    pub fn resume(&self) {
        let _ = self.asks.send(Ask::Resume);
    }
}
