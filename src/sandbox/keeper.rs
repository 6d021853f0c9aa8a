//! The init's life while its workload runs: it reaps every child, forwards
//! signals to the workload, and, in a sandbox the daemon supervises, keeps
//! the workload's output (stamping each line into the log, so output never
//! waits on the daemon, is never lost while none runs, and keeps the time
//! it was written) and answers the daemon's commands. When the workload
//! ends it reports how, and a supervised init stays until the daemon (or
//! a successor that adopts it) has heard it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::channel::Channel;
use super::config::{InitCommand, InitReport};
use crate::logline::{LOG_MAX_BYTES, Stamper};

/// Where a log that no daemon rotates stops growing: twice the size at
/// which a rotation is asked for.
const LOG_CAP: u64 = 2 * LOG_MAX_BYTES;

/// A log write that fails (a full disk) is reported at most this often.
const COMPLAINT_INTERVAL: Duration = Duration::from_secs(60);

/// How long the output of a workload that ended is read before the end is
/// reported, when something outside the sandbox's pid namespace may still
/// hold the pipe (a sandbox in the host's pid namespace).
const DRAIN_HOST_PID: Duration = Duration::from_millis(100);

/// The workload's output, copied into the log (the init's stdout).
pub struct Output {
    pipe: Option<OwnedFd>,
    stamper: Stamper,
    /// Bytes in the current log file.
    size: u64,
    /// Bytes the workload wrote since the current log file was opened,
    /// those dropped at `LOG_CAP` included.
    offered: u64,
    /// A rotation was asked for, at this many bytes offered, and not yet answered.
    asked: Option<u64>,
    /// Output is dropped: the log is at `LOG_CAP` and no daemon rotated it.
    capped: bool,
    failing: bool,
    /// The failing spell's start was said (`LogFailing`): its end is too.
    said: bool,
    told: Option<Instant>,
    lost: u64,
    /// The log's last byte written is not a newline.
    mid_line: bool,
    /// A write failed part way: the next output begins a line of its own.
    broken: bool,
}

impl Output {
    pub fn new(pipe: OwnedFd) -> Self {
        let size = nix::sys::stat::fstat(std::io::stdout().as_fd()).map_or(0, |s| s.st_size as u64);
        Output {
            pipe: Some(pipe),
            stamper: Stamper::default(),
            size,
            offered: size,
            asked: None,
            capped: false,
            failing: false,
            said: false,
            told: None,
            lost: 0,
            mid_line: false,
            broken: false,
        }
    }

    /// Whether a rotation is to be asked for (again) now: once the log is
    /// full, and again for each further quarter of `LOG_MAX_BYTES` written
    /// without an answer (the daemon that was asked may have died; its
    /// successor, which adopted the sandbox, was never asked).
    fn ask_now(&self) -> bool {
        self.offered >= LOG_MAX_BYTES && self.asked.is_none_or(|at| self.offered >= at + LOG_MAX_BYTES / 4)
    }

    /// Asks for a rotation when it is time to (`ask_now`).
    fn ask(&mut self, channel: &Channel) {
        // Not waited for: while no daemon reads, its queue fills, and the
        // init must go on reading the workload's output and reaping.
        if self.ask_now() && channel.try_report(InitReport::LogFull).is_ok() {
            self.asked = Some(self.offered);
        }
    }

    fn write(&mut self, bytes: &[u8], channel: &Channel) {
        self.write_into(std::io::stdout().as_fd(), bytes, channel);
    }

    /// `write`, into `log` (the init's stdout: the log file).
    fn write_into(&mut self, log: BorrowedFd<'_>, bytes: &[u8], channel: &Channel) {
        self.offered += bytes.len() as u64;
        // No daemon rotates it: the rest is dropped, and counted, rather
        // than fill the disk; a rotation is still asked for, for a daemon
        // that comes.
        if self.size >= LOG_CAP {
            self.lost += bytes.len() as u64;
            if !std::mem::replace(&mut self.capped, true) {
                let error = format!("the log is at {} MiB and no daemon has rotated it", LOG_CAP >> 20);
                self.said = channel.try_report(InitReport::LogFailing { error }).is_ok();
            }
            self.ask(channel);
            return;
        }
        // After a write that failed part way (a full disk), the line it
        // tore is ended first: the next line is not glued onto it.
        let mended;
        let bytes = match self.broken && self.mid_line {
            true => {
                mended = [b"\n".as_slice(), bytes].concat();
                &mended[..]
            }
            false => bytes,
        };
        let (written, result) = write_counted(log, bytes);
        self.size += written as u64;
        if written > 0 {
            self.mid_line = bytes[written - 1] != b'\n';
        }
        match result {
            Ok(()) => {
                self.broken = false;
                // The end of a spell whose start was said is said, with what
                // it lost. A spell begun within a minute of the last word is
                // not said (below), and what it lost goes into the next word,
                // or is said a minute after the last at the soonest: a
                // workload's root can make this process's writes fail and
                // succeed in turn (prlimit(1, RLIMIT_FSIZE) asks only for its
                // ids, not its dumpability), and each turn would otherwise be
                // a line of the daemon's log.
                let spell_said = std::mem::take(&mut self.failing) && std::mem::take(&mut self.said);
                if spell_said || self.unsaid_until().is_some_and(|due| due <= Instant::now()) {
                    self.say_lost(channel);
                }
                self.ask(channel);
            }
            Err(e) => {
                self.lost += (bytes.len() - written) as u64;
                self.broken = true;
                self.stamper.break_line();
                if !self.failing && self.told.is_none_or(|t| t.elapsed() >= COMPLAINT_INTERVAL) {
                    self.told = Some(Instant::now());
                    self.said = channel.try_report(InitReport::LogFailing { error: e.to_string() }).is_ok();
                }
                self.failing = true;
            }
        }
    }

    /// When losses not said yet are to be said, if no write says them
    /// first: a minute after the last word (writes that fail and succeed
    /// in turn are said a few times a minute at most, see `write_into`).
    /// None while nothing is owed, while writes fail (the spell's end says
    /// it) and at the cap (said once, when reached).
    fn unsaid_until(&self) -> Option<Instant> {
        let owed = self.lost > 0 && !self.failing && !self.capped;
        owed.then(|| self.told.map_or_else(Instant::now, |told| told + COMPLAINT_INTERVAL))
    }

    /// Says the losses not said yet: at `unsaid_until`, for a workload
    /// that wrote nothing since, and at the workload's end, whatever the
    /// interval (once a run), so no loss goes unsaid.
    fn say_lost(&mut self, channel: &Channel) {
        if self.lost == 0 || self.capped {
            return;
        }
        let lost = std::mem::take(&mut self.lost);
        let said = match self.failing {
            true => {
                InitReport::LogFailing { error: format!("the run ended; {lost} bytes of its output were not written") }
            }
            false => InitReport::LogWritten { lost },
        };
        self.told = Some(Instant::now());
        let _ = channel.try_report(said);
    }

    /// Reads what is there; false at the end (every writer gone).
    fn copy(&mut self, channel: &Channel) -> bool {
        let Some(pipe) = &self.pipe else { return false };
        let mut buf = [0u8; 64 << 10];
        match nix::unistd::read(pipe, &mut buf) {
            Ok(0) | Err(_) => {
                let mut out = Vec::new();
                self.stamper.finish(&mut out);
                // A line a failed write tore is ended too (`write` does).
                if !out.is_empty() || (self.broken && self.mid_line) {
                    self.write(&out, channel);
                }
                self.pipe = None;
                false
            }
            Ok(n) => {
                let mut out = Vec::with_capacity(n + 64);
                self.stamper.stamp(&buf[..n], SystemTime::now(), &mut out);
                self.write(&out, channel);
                true
            }
        }
    }

    /// The daemon rotated the log: write the new file from now on.
    fn switch(&mut self, fd: OwnedFd) {
        // A line the workload has not finished is ended in the old file,
        // and its rest begins the new one stamped: carried on unstamped,
        // the workload would write the new file's first stamp itself.
        if self.mid_line {
            let _ = write_counted(std::io::stdout().as_fd(), b"\n");
            self.stamper.end_line();
        } else {
            self.stamper.break_line();
        }
        // SAFETY: dup2 onto stdout and stderr, which this process owns; `fd` is open.
        unsafe {
            libc::dup2(fd.as_raw_fd(), 1);
            libc::dup2(fd.as_raw_fd(), 2);
        }
        self.size = nix::sys::stat::fstat(fd.as_fd()).map_or(0, |s| s.st_size as u64);
        self.offered = self.size;
        self.asked = None;
        // A new file: no line of it is torn.
        (self.mid_line, self.broken) = (false, false);
        // What was dropped at the cap is said once the log is written again.
        self.failing |= std::mem::take(&mut self.capped);
    }
}

/// Writes all of `data` to `fd` (unbuffered), or as much as it can:
/// returns how much was written, and why it stopped short.
fn write_counted(fd: BorrowedFd<'_>, data: &[u8]) -> (usize, std::io::Result<()>) {
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(fd, &data[done..]) {
            Ok(0) => return (done, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return (done, Err(e.into())),
        }
    }
    (done, Ok(()))
}

pub struct Keeper {
    pub channel: Channel,
    pub workload: Pid,
    pub signals: SignalFd,
    /// The signals forwarded to the workload (the rest of the mask is SIGCHLD).
    pub forwarded: &'static [Signal],
    pub output: Option<Output>,
    /// Supervised by the daemon: commands are read, and the end waits for its Ack.
    pub supervised: bool,
    /// Whether the sandbox has its own pid namespace (this init is its PID 1).
    pub private_pid: bool,
}

pub fn signalfd(mask: &SigSet) -> nix::Result<SignalFd> {
    SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC)
}

impl Keeper {
    /// Runs until the workload has ended (and, supervised, until its end
    /// was heard); returns the report of its end.
    pub fn keep(mut self) -> InitReport {
        let end = self.until_the_end();
        // What is left of the sandbox goes with its workload: in its own pid
        // namespace, everything but this init; its output is then read to
        // its end before the end is reported.
        if self.private_pid {
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        }
        let drain_until = (!self.private_pid).then(|| Instant::now() + DRAIN_HOST_PID);
        while self.output.as_ref().is_some_and(|o| o.pipe.is_some()) {
            let left = drain_until.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) || !self.wait_for_output(left) {
                break;
            }
            let channel = &self.channel;
            if let Some(output) = &mut self.output {
                output.copy(channel);
            }
        }
        self.reap_all();
        let channel = &self.channel;
        if let Some(output) = &mut self.output {
            output.say_lost(channel);
        }
        // An exit status alone cannot tell `exit 143` from death by SIGTERM.
        let _ = self.channel.report(end.clone());
        if self.supervised {
            self.until_heard(&end);
        }
        end
    }

    fn reap_all(&self) {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }

    fn wait_for_output(&self, timeout: Option<Duration>) -> bool {
        let Some(pipe) = self.output.as_ref().and_then(|o| o.pipe.as_ref()) else { return false };
        let ms = timeout
            .map_or(PollTimeout::NONE, |t| PollTimeout::try_from(t.as_millis() as i32).unwrap_or(PollTimeout::ZERO));
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, ms), Ok(n) if n > 0)
    }

    /// Signals, output and commands until the workload ends.
    fn until_the_end(&mut self) -> InitReport {
        loop {
            let (signals, output, commands) = {
                let pipe = self.output.as_ref().and_then(|o| o.pipe.as_ref()).map(|p| p.as_fd());
                // SAFETY: the channel's descriptor lives as long as `self`, across this poll.
                let channel = unsafe { BorrowedFd::borrow_raw(self.channel.fd().as_raw_fd()) };
                let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
                if let Some(pipe) = pipe {
                    fds.push(PollFd::new(pipe, PollFlags::POLLIN));
                }
                if self.supervised {
                    fds.push(PollFd::new(channel, PollFlags::POLLIN));
                }
                // Losses owed are said when due, though the workload is quiet.
                let due = self.output.as_ref().and_then(Output::unsaid_until);
                let timeout = due.map_or(PollTimeout::NONE, |due| {
                    let ms = due.saturating_duration_since(Instant::now()).as_millis() + 1;
                    PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(PollTimeout::MAX)
                });
                match poll(&mut fds, timeout) {
                    Ok(0) => {
                        let channel = &self.channel;
                        if let Some(output) = &mut self.output
                            && output.unsaid_until().is_some_and(|due| due <= Instant::now())
                        {
                            output.say_lost(channel);
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(_) => continue,
                }
                let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                let signals = ready(&fds[0]);
                let output = pipe.is_some() && ready(&fds[1]);
                let commands = self.supervised && ready(&fds[fds.len() - 1]);
                (signals, output, commands)
            };
            if output {
                let channel = &self.channel;
                if let Some(o) = &mut self.output {
                    o.copy(channel);
                }
            }
            if commands {
                self.command();
            }
            if signals && let Some(end) = self.signal() {
                return end;
            }
        }
    }

    /// One signal: forwarded, or SIGCHLD (reap; the workload's end).
    fn signal(&mut self) -> Option<InitReport> {
        let Ok(Some(info)) = self.signals.read_signal() else { return None };
        let signal = Signal::try_from(info.ssi_signo as i32).ok()?;
        if signal != Signal::SIGCHLD {
            // Raised by the kernel in this process for what it did itself
            // (SIGPIPE, SIGXFSZ: the sender is this process; SIGXCPU at its
            // own CPU limit: the kernel), not sent.
            let raised_here = (info.ssi_code == libc::SI_USER && info.ssi_pid == std::process::id())
                || info.ssi_code == libc::SI_KERNEL;
            if self.forwarded.contains(&signal) && !raised_here {
                let _ = kill(self.workload, signal);
            }
            return None;
        }
        let mut end = None;
        let at_us = || super::process::boot_clock().and_then(|t| u64::try_from(t.as_micros()).ok());
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.workload => {
                    end = Some(InitReport::Exited { code: Some(code), signal: None, at_us: at_us() });
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.workload => {
                    end = Some(InitReport::Exited { code: None, signal: Some(sig as i32), at_us: at_us() });
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        end
    }

    /// A command from the daemon (the channel is readable).
    fn command(&mut self) -> Option<InitCommand> {
        let (command, mut fds) = self.channel.recv::<InitCommand>().ok()?;
        if command == InitCommand::NewLog
            && let (Some(output), Some(fd)) = (&mut self.output, fds.pop())
        {
            output.switch(fd);
        }
        Some(command)
    }

    /// After the end is reported: until the daemon says it heard it. With
    /// no daemon, until a successor adopts this sandbox and reads it.
    fn until_heard(&mut self, end: &InitReport) {
        loop {
            let fd = self.channel.fd().as_fd();
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            match self.channel.recv::<InitCommand>() {
                Ok((InitCommand::Ack, _)) => return,
                Ok((InitCommand::Query, _)) => {
                    let _ = self.channel.report(end.clone());
                }
                Ok((InitCommand::NewLog, _)) => {}
                // The daemon's end is held by this init too (for adoption),
                // so the channel never closes: an error is the end of it.
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An init's end of a channel, and the daemon's.
    fn channels() -> (Channel, Channel) {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        (Channel::new(ours), Channel::new(theirs))
    }

    #[test]
    fn a_rotation_is_asked_again_while_none_comes_and_the_log_stops_at_its_cap() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut out = Output::new(read);
        out.offered = LOG_MAX_BYTES - 1;
        assert!(!out.ask_now());
        out.offered = LOG_MAX_BYTES;
        assert!(out.ask_now(), "full: asked");
        out.asked = Some(out.offered);
        out.offered += LOG_MAX_BYTES / 4 - 1;
        assert!(!out.ask_now(), "asked, and not much written since");
        out.offered += 1;
        assert!(out.ask_now(), "no answer (the daemon that was asked died): asked again");
        // At the cap nothing is written (this test's stdout is untouched), and it is counted.
        let (init, daemon) = channels();
        out.size = LOG_CAP;
        out.offered = LOG_CAP;
        out.asked = Some(LOG_CAP);
        out.write(b"dropped\n", &init);
        out.write(b"too\n", &init);
        assert_eq!((out.lost, out.size), (12, LOG_CAP));
        let said = daemon.try_recv_report::<InitReport>().unwrap();
        assert!(
            matches!(&said, InitReport::LogFailing { error } if error.contains("no daemon has rotated it")),
            "{said:?}"
        );
        assert!(daemon.try_recv_report::<InitReport>().is_err(), "said once");
        // Capped, it still asks for a rotation as output keeps coming (for
        // a daemon that adopts it later and was never asked).
        out.write(&vec![b'x'; (LOG_MAX_BYTES / 4) as usize], &init);
        assert!(matches!(daemon.try_recv_report::<InitReport>(), Ok(InitReport::LogFull)));
        // And never waits for a daemon that does not read: with its queue
        // full, the asks are dropped, and the init goes on.
        while init.try_send(&InitReport::LogFull, &[]).is_ok() {}
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..8 {
                out.write(&vec![b'x'; (LOG_MAX_BYTES / 4) as usize], &init);
            }
            let _ = done.send(());
        });
        assert!(finished.recv_timeout(Duration::from_secs(10)).is_ok(), "a write waited for the daemon");
    }

    /// Writes that fail and succeed in turn (a workload's root can do that
    /// to its init: prlimit(1, RLIMIT_FSIZE) needs only the init's ids,
    /// not its dumpability) are said at most a few times a minute, not
    /// once per turn into the daemon's log; what they lost is counted on
    /// into the next word, and that word comes once a minute has passed.
    #[test]
    fn writes_that_fail_and_succeed_in_turn_are_said_a_few_times_a_minute_not_at_each_turn() {
        let failing = std::fs::File::open("/dev/null").unwrap();
        let writing = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut out = Output::new(read);
        let (init, daemon) = channels();
        for _ in 0..50 {
            out.write_into(failing.as_fd(), b"lost\n", &init);
            out.write_into(writing.as_fd(), b"kept\n", &init);
        }
        let said: Vec<InitReport> = std::iter::from_fn(|| daemon.try_recv_report::<InitReport>().ok()).collect();
        assert!(
            matches!(said.as_slice(), [InitReport::LogFailing { .. }, InitReport::LogWritten { lost: 5 }]),
            "{said:?}"
        );
        // A minute after the last word, the losses since are said.
        out.told = Some(Instant::now().checked_sub(COMPLAINT_INTERVAL).expect("a machine up a minute at least"));
        out.write_into(writing.as_fd(), b"kept\n", &init);
        let said = daemon.try_recv_report::<InitReport>();
        assert!(matches!(said, Ok(InitReport::LogWritten { lost: 245 })), "{said:?}");
        out.write_into(writing.as_fd(), b"kept\n", &init);
        assert!(daemon.try_recv_report::<InitReport>().is_err(), "said once");
    }

    /// Losses held back for the minute are said when it is over though
    /// the workload wrote nothing since (the keeper's poll wakes for it),
    /// and at the workload's end in any case: a workload that went quiet
    /// or ended does not take them with it.
    #[test]
    fn losses_held_back_are_said_when_due_or_at_the_end_though_nothing_is_written_after() {
        let failing = std::fs::File::open("/dev/null").unwrap();
        let writing = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut out = Output::new(read);
        let (init, daemon) = channels();
        let said = || std::iter::from_fn(|| daemon.try_recv_report::<InitReport>().ok()).collect::<Vec<_>>();
        assert_eq!(out.unsaid_until(), None, "nothing owed");
        out.write_into(failing.as_fd(), b"lost\n", &init);
        assert_eq!(out.unsaid_until(), None, "owed, but the spell's end says it");
        out.write_into(writing.as_fd(), b"kept\n", &init);
        out.write_into(failing.as_fd(), b"lost again\n", &init);
        out.write_into(writing.as_fd(), b"kept\n", &init);
        assert!(matches!(said().as_slice(), [InitReport::LogFailing { .. }, InitReport::LogWritten { lost: 5 }]));
        let told = out.told.unwrap();
        assert_eq!(out.unsaid_until(), Some(told + COMPLAINT_INTERVAL), "11 bytes held back for the minute");
        out.say_lost(&init);
        assert!(matches!(said().as_slice(), [InitReport::LogWritten { lost: 11 }]));
        assert_eq!(out.unsaid_until(), None);

        // Ended while the writes fail: what the spell lost is said.
        out.write_into(failing.as_fd(), b"at the end\n", &init);
        out.say_lost(&init);
        let end = said();
        assert!(
            matches!(end.as_slice(), [InitReport::LogFailing { error }] if error == "the run ended; 11 bytes of its output were not written"),
            "{end:?}"
        );
        out.say_lost(&init);
        assert!(said().is_empty(), "said once");
    }

    /// The keeper's loop wakes to say losses that fall due while the
    /// workload writes nothing.
    #[test]
    fn the_keeper_says_losses_that_fall_due_while_the_workload_is_quiet() {
        let failing = std::fs::File::open("/dev/null").unwrap();
        let writing = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut out = Output::new(read);
        let (init, daemon) = channels();
        out.write_into(failing.as_fd(), b"lost\n", &init);
        out.write_into(writing.as_fd(), b"kept\n", &init);
        out.write_into(failing.as_fd(), b"held\n", &init);
        out.write_into(writing.as_fd(), b"kept\n", &init);
        while daemon.try_recv_report::<InitReport>().is_ok() {}
        // Due in a tenth of a second.
        let due_in = Duration::from_millis(100);
        out.told =
            Some(Instant::now().checked_sub(COMPLAINT_INTERVAL - due_in).expect("a machine up a minute at least"));
        let mut keeper = Keeper {
            channel: init,
            workload: Pid::from_raw(i32::MAX),
            // A signal nothing sends: the loop wakes for the loss alone.
            signals: signalfd(&SigSet::from(Signal::SIGWINCH)).unwrap(),
            forwarded: &[],
            output: Some(out),
            supervised: false,
            private_pid: false,
        };
        // Left in its loop, which ends only at its workload's end.
        std::thread::spawn(move || {
            let _write = write;
            keeper.until_the_end()
        });
        let fd = daemon.fd().as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)), Ok(1), "nothing said in 10 s");
        let said = daemon.try_recv_report::<InitReport>();
        assert!(matches!(said, Ok(InitReport::LogWritten { lost: 5 })), "{said:?}");
    }

    /// A write cut short by a full disk leaves half a line: the next line
    /// written is not glued onto it.
    #[test]
    fn a_line_a_full_disk_tore_is_ended_before_the_next() {
        let dir = crate::fsutil::SmallTmpfs::mount("8k");
        let log = std::fs::File::create(dir.path().join("w.log")).unwrap();
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut out = Output::new(read);
        let (init, _daemon) = channels();
        let whole = [b"w".repeat(4095), b"\n".to_vec()].concat();
        out.write_into(log.as_fd(), &whole, &init);
        let long = [b"x".repeat(8000), b"\n".to_vec()].concat();
        out.write_into(log.as_fd(), &long, &init);
        assert!(out.failing && out.lost > 0, "the disk was full");
        dir.resize("64k");
        // At the run's end, with nothing more to write, the torn line is ended too.
        let mut twin =
            Output { mid_line: out.mid_line, broken: out.broken, ..Output::new(nix::unistd::pipe().unwrap().0) };
        let copy = std::fs::File::create(dir.path().join("copy.log")).unwrap();
        twin.write_into(copy.as_fd(), b"", &init);
        assert_eq!(std::fs::read(dir.path().join("copy.log")).unwrap(), b"\n");
        out.write_into(log.as_fd(), b"next\n", &init);
        let text = std::fs::read_to_string(dir.path().join("w.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{:?}", lines.iter().map(|l| l.len()).collect::<Vec<_>>());
        assert!(lines[1].chars().all(|c| c == 'x') && lines[2] == "next", "{:?}", &lines[1..]);
    }
}
