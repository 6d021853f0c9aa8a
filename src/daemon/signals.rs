//! The signals the daemon's loop acts on (SIGTERM and SIGINT stop every
//! workload, SIGHUP rescans) are never lost, and never take their default
//! action, which would end the daemon and leave its workloads unsupervised.
//!
//! They are blocked from the daemon's start (`hold`, in `main` before
//! anything else, while it is one thread: every thread it makes inherits
//! the mask), and no handler is installed: one thread of their own takes
//! them from the kernel (`sigtimedwait`) and hands them to the loop
//! (`Taker`). What comes before the loop listens (the recovery of a
//! predecessor's sandboxes) waits, pending. An upgrade has that thread
//! stop taking them (`Taker::pause`): from then on each is either in the
//! loop's channel or pending in the kernel, and the upgrade looks at both
//! before it execs (a stop asked meanwhile abandons the upgrade).

use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// The signals the loop handles.
pub const HANDLED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// How long the taking thread waits for a signal before it looks for a
/// pause asked of it: the most a pause waits.
const LOOK: Duration = Duration::from_millis(50);

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    HANDLED.iter().for_each(|s| set.add(*s));
    set
}

/// Blocks the handled signals in the calling thread, and so in every
/// thread it makes from now on.
pub fn hold() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None);
}

/// Unblocks them in the calling thread: before an upgrade's exec, for a
/// next image that does not hold them itself (a paddock older than this,
/// whose handlers would never run with them blocked; a newer one holds
/// them again in the first instructions of `main`).
pub fn release() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
}

/// One of the handled signals pending for the process or this thread,
/// taken (none waits).
pub fn take_pending() -> Option<Signal> {
    let none = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: sigtimedwait on a valid set, with no info asked and a zero
    // timeout on our stack.
    let signal = unsafe { libc::sigtimedwait(handled().as_ref(), std::ptr::null_mut(), &none) };
    Signal::try_from(signal).ok()
}

enum Ask {
    Pause(mpsc::Sender<()>),
    Resume,
}

/// The thread that takes the handled signals and hands them to the loop.
pub struct Taker {
    asks: mpsc::Sender<Ask>,
}

impl Taker {
    /// Starts the thread: what is pending is handed over first.
    pub fn start(to: tokio::sync::mpsc::UnboundedSender<Signal>) -> std::io::Result<Self> {
        let (asks, asked) = mpsc::channel::<Ask>();
        std::thread::Builder::new().name("paddock-signals".into()).spawn(move || {
            let wait = libc::timespec { tv_sec: 0, tv_nsec: LOOK.as_nanos() as libc::c_long };
            loop {
                match asked.try_recv() {
                    Ok(Ask::Pause(done)) => {
                        let _ = done.send(());
                        loop {
                            match asked.recv() {
                                Ok(Ask::Resume) => break,
                                Ok(Ask::Pause(done)) => drop(done.send(())),
                                Err(_) => return,
                            }
                        }
                        continue;
                    }
                    Ok(Ask::Resume) => {}
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                // SAFETY: sigtimedwait on a valid set, with no info asked
                // and a timeout on our stack.
                let signal = unsafe { libc::sigtimedwait(handled().as_ref(), std::ptr::null_mut(), &wait) };
                if let Ok(signal) = Signal::try_from(signal)
                    && to.send(signal).is_err()
                {
                    return;
                }
            }
        })?;
        Ok(Self { asks })
    }

    /// Stops taking them; returns once the thread has stopped (what it
    /// took is in the loop's channel, what comes stays pending).
    pub fn pause(&self) {
        let (done, answered) = mpsc::channel();
        if self.asks.send(Ask::Pause(done)).is_ok() {
            let _ = answered.recv();
        }
    }

    /// Takes them again.
    pub fn resume(&self) {
        let _ = self.asks.send(Ask::Resume);
    }
}
