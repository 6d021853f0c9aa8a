//! The signals the daemon's loop acts on (SIGTERM and SIGINT stop every
//! workload, SIGHUP rescans) are never lost, and never take their default
//! action, which would end the daemon and leave its workloads unsupervised.
//!
//! They are blocked from the daemon's start (`hold`, while it is one
//! thread, so every thread it makes inherits the mask), and one thread of
//! their own takes them once the loop's handlers are in place (`Taker`):
//! what came before, during the recovery of a predecessor's sandboxes, is
//! pending until then. An upgrade has that thread stop taking them before
//! its exec, and sends again what the loop heard but will not act on: the
//! exec keeps both the mask and what is pending, and the next image hears
//! them once its own loop listens.

use std::sync::mpsc;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// The signals the loop handles.
pub const HANDLED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    HANDLED.iter().for_each(|s| set.add(*s));
    set
}

/// Blocks the handled signals in the calling thread, and so in every
/// thread it makes from now on. Called at the daemon's start, while it is
/// one thread.
pub fn hold() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None);
}

/// The thread that takes the handled signals (the only one that does not
/// block them: the runtime's handler runs there).
pub struct Taker {
    asks: mpsc::Sender<(bool, mpsc::Sender<()>)>,
}

impl Taker {
    /// Starts the thread, which takes the signals at once (what is pending
    /// first). Call it once the loop's handlers are installed.
    pub fn start() -> std::io::Result<Self> {
        let (asks, asked) = mpsc::channel::<(bool, mpsc::Sender<()>)>();
        let (ready, started) = mpsc::channel();
        std::thread::Builder::new().name("paddock-signals".into()).spawn(move || {
            let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
            let _ = ready.send(());
            for (take, done) in asked {
                let how = if take { SigmaskHow::SIG_UNBLOCK } else { SigmaskHow::SIG_BLOCK };
                let _ = pthread_sigmask(how, Some(&handled()), None);
                let _ = done.send(());
            }
        })?;
        let _ = started.recv();
        Ok(Self { asks })
    }

    /// Whether the thread takes the signals; returns once it does (or
    /// does not).
    pub fn taking(&self, take: bool) {
        let (done, answered) = mpsc::channel();
        if self.asks.send((take, done)).is_ok() {
            let _ = answered.recv();
        }
    }
}
