//! A process known by its pid and start time, which together name it even
//! after the pid is recycled (a record written by an earlier daemon may
//! outlive the process it describes).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::sys;

/// The start time of `pid` in clock ticks after boot (field 22 of
/// /proc/PID/stat), or None when there is no such process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat).
pub fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// What `kill` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// No process with this pid and start time exists.
    Gone,
    /// It was there, got SIGKILL and is gone (it may await its parent's wait).
    Killed,
    /// It was there and did not end within the timeout.
    Stuck,
}

/// SIGKILLs the process `pid` if it is still the one that started at
/// `started`, and waits up to `timeout` for it to end. The check and the
/// signal go through a pidfd, so a recycled pid is never hit.
pub fn kill(pid: i32, started: u64, timeout: Duration) -> Killed {
    if start_time(pid) != Some(started) {
        return Killed::Gone;
    }
    let Ok(pidfd) = sys::pidfd_open(pid) else { return Killed::Gone };
    // The pidfd now pins this pid: if the start time still matches, it is ours.
    if start_time(pid) != Some(started) {
        return Killed::Gone;
    }
    let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
    let deadline = Instant::now() + timeout;
    loop {
        // A pidfd polls readable once its process has ended.
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return Killed::Killed,
            Err(nix::errno::Errno::EINTR) => continue,
            _ if Instant::now() < deadline => continue,
            _ => return Killed::Stuck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_names_a_process_and_kill_spares_a_recycled_pid() {
        let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        let pid = child.id() as i32;
        let started = start_time(pid).expect("a running child has a start time");
        assert_eq!(start_time(pid), Some(started), "the start time is stable");
        // A record whose start time differs describes another process: left alone.
        assert_eq!(kill(pid, started + 1, Duration::from_secs(1)), Killed::Gone);
        assert!(child.try_wait().unwrap().is_none(), "the child still runs");
        assert_eq!(kill(pid, started, Duration::from_secs(5)), Killed::Killed);
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        assert_eq!(start_time(i32::MAX), None);
    }
}
