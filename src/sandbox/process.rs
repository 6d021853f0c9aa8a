//! A process known by its pid and start time, which together name it even
//! after the pid is recycled (a record written by an earlier daemon may
//! outlive the process it describes).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::sys;

/// The start time of `pid` in clock ticks after boot (field 22 of
/// /proc/PID/stat), or None when there is no such process (or it cannot
/// be read: where that matters, `start_time_checked`).
pub fn start_time(pid: i32) -> Option<u64> {
    start_time_checked(pid).ok().flatten()
}

/// How long ago a process that started at `start_time` (clock ticks
/// after boot, as /proc/PID/stat says) began: by the boot clock, which
/// no step of the wall clock moves (NTP at boot, a host whose RTC was
/// wrong). None where the clock cannot be read.
pub fn running_for(start_time: u64) -> Option<std::time::Duration> {
    // SAFETY: sysconf has no preconditions.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|t| *t > 0)?;
    let now = boot_clock()?;
    let started = std::time::Duration::from_secs(start_time / ticks)
        + std::time::Duration::from_nanos((start_time % ticks) * 1_000_000_000 / ticks);
    Some(now.saturating_sub(started))
}

/// The time since this boot began (CLOCK_BOOTTIME: it goes on during a
/// suspend, and no step of the wall clock moves it). None where it
/// cannot be read.
pub fn boot_clock() -> Option<std::time::Duration> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the kernel to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    Some(std::time::Duration::new(u64::try_from(now.tv_sec).ok()?, u32::try_from(now.tv_nsec).ok()?))
}

/// The moment, on this process's monotonic clock, that was `at` on the
/// boot clock (`boot_clock`); None when that is not before now.
pub fn instant_at(at: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_sub(boot_clock()?.checked_sub(at)?)
}

/// Whether the process `pid` that started at `started` has ended (another
/// of that pid, or none). What cannot be told counts as running.
pub fn has_ended(pid: u32, started: u64) -> bool {
    i32::try_from(pid).is_ok_and(|pid| start_time_checked(pid).is_ok_and(|now| now != Some(started)))
}

/// As `start_time`, telling "no such process" (`Ok(None)`) from "cannot
/// tell" (an error reading /proc: out of descriptors or memory, say),
/// for what decides that a process is gone: taking the one for the other
/// would forget a sandbox that runs on.
pub fn start_time_checked(pid: i32) -> Result<Option<u64>, Errno> {
    from_stat(std::fs::read(format!("/proc/{pid}/stat")))
}

/// The fields of /proc/PID/stat after the command name (field 2), which
/// may hold spaces, parentheses and bytes that are not UTF-8 (the process
/// chooses it): what follows its last ')'.
fn after_name(stat: &[u8]) -> Option<&str> {
    let end = stat.iter().rposition(|b| *b == b')')?;
    std::str::from_utf8(&stat[end + 1..]).ok()
}

fn from_stat(read: std::io::Result<Vec<u8>>) -> Result<Option<u64>, Errno> {
    match read {
        Ok(stat) => Ok(after_name(&stat).and_then(|rest| rest.split_whitespace().nth(19)?.parse().ok())),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(None),
        Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
    }
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat).
pub fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    after_name(&stat)?.split_whitespace().nth(1)?.parse().ok()
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
    /// Whether it is there cannot be told (reading /proc or opening a
    /// pidfd failed otherwise than for a missing process); nothing was sent.
    Unknown(Errno),
}

/// SIGKILLs the process `pid` if it is still the one that started at
/// `started`, and waits up to `timeout` for it to end. The check and the
/// signal go through a pidfd, so a recycled pid is never hit.
pub fn kill(pid: i32, started: u64, timeout: Duration) -> Killed {
    match start_time_checked(pid) {
        Err(e) => return Killed::Unknown(e),
        Ok(t) if t != Some(started) => return Killed::Gone,
        Ok(_) => {}
    }
    let pidfd = match sys::pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(Errno::ESRCH) => return Killed::Gone,
        Err(e) => return Killed::Unknown(e),
    };
    // The pidfd now pins this pid: if the start time still matches, it is ours.
    match start_time_checked(pid) {
        Err(e) => return Killed::Unknown(e),
        Ok(t) if t != Some(started) => return Killed::Gone,
        Ok(_) => {}
    }
    let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
    if ended_within(pidfd.as_fd(), timeout) { Killed::Killed } else { Killed::Stuck }
}

/// Whether `child`, a child of this process not yet waited for (so its
/// pid is still its own), ends within `limit`: waited for on a pidfd, no
/// polling. True when no pidfd can be had (the wait that follows then
/// blocks as it would have).
pub fn ends_within(child: &std::process::Child, limit: Duration) -> bool {
    let Ok(pidfd) = sys::pidfd_open(child.id() as i32) else { return true };
    ended_within(pidfd.as_fd(), limit)
}

/// Whether the process of `pidfd` ends within `limit` (a pidfd polls
/// readable once its process has ended).
fn ended_within(pidfd: std::os::fd::BorrowedFd<'_>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            _ if Instant::now() < deadline => continue,
            _ => return false,
        }
    }
}

/// The host's processes with a uid (real, effective, saved or for the
/// filesystem) in `range`: a sandbox's, whose root and users are mapped
/// there. A scan of /proc: for the rare moments that must know. What
/// cannot be read (/proc itself, or a process's status for another
/// reason than its end) is an error: "none" would free ids still in use.
/// Children come before their parents: `kill -9` of them in this order
/// never meets one already gone (a sandbox's init killed first takes its
/// namespace's processes with it).
pub fn running_as(range: &crate::idmap::IdRange) -> std::io::Result<Vec<i32>> {
    let within = |uid: &str| uid.parse::<u32>().is_ok_and(|uid| uid >= range.start && u64::from(uid) < range.end());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // Read as bytes: its Name line is the process's to choose, and
        // may be no UTF-8 (the lines read here are the kernel's).
        let status = match std::fs::read(format!("/proc/{pid}/status")) {
            Ok(status) => String::from_utf8_lossy(&status).into_owned(),
            // Ended meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => return Err(e),
        };
        // A zombie (ended, not yet reaped) runs nothing.
        let state = status.lines().find_map(|l| l.strip_prefix("State:")).unwrap_or_default();
        let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default();
        if !state.trim_start().starts_with(['Z', 'X']) && uids.split_whitespace().any(within) {
            let parent = status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok());
            found.push((pid, parent.unwrap_or(0)));
        }
    }
    Ok(children_first(found))
}

/// The pids of `(pid, parent)`, each before its parent (deepest first,
/// then the later pid first).
fn children_first(processes: Vec<(i32, i32)>) -> Vec<i32> {
    let parents: std::collections::HashMap<i32, i32> = processes.iter().copied().collect();
    // How many of its ancestors are listed; bounded by the count, so a
    // cycle (pids reused while /proc was read) ends.
    let depth = |pid: i32| {
        let (mut at, mut depth) = (pid, 0);
        while depth < processes.len()
            && let Some(parent) = parents.get(&at)
        {
            at = *parent;
            depth += 1;
        }
        depth
    };
    let mut ordered: Vec<(usize, i32)> = processes.iter().map(|&(pid, _)| (depth(pid), pid)).collect();
    ordered.sort_unstable_by(|a, b| b.cmp(a));
    ordered.into_iter().map(|(_, pid)| pid).collect()
}

/// Who runs as a sandbox's ids, as an operator is told it.
#[derive(Debug)]
pub enum InUse {
    /// These processes do.
    By(Vec<i32>),
    /// Which do cannot be told.
    Unknown(std::io::Error),
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Bounded: a host may run many.
            InUse::By(pids) if pids.len() > SHOWN => {
                write!(f, "processes run as its ids (pids {:?} and {} more)", &pids[..SHOWN], pids.len() - SHOWN)
            }
            InUse::By(pids) => write!(f, "processes run as its ids (pids {pids:?})"),
            InUse::Unknown(e) => write!(f, "which processes run as its ids cannot be told (reading /proc: {e})"),
        }
    }
}

/// How many pids `InUse` names.
pub const SHOWN: usize = 20;

/// `running_as`, for telling: None when no process runs as `range`.
pub fn in_use(range: &crate::idmap::IdRange) -> Option<InUse> {
    match running_as(range) {
        Ok(pids) if pids.is_empty() => None,
        Ok(pids) => Some(InUse::By(pids)),
        Err(e) => Some(InUse::Unknown(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child began when its /proc/PID/stat says: not before this test
    /// began, nor after now (ticks are 10 ms here).
    #[test]
    fn a_process_has_run_since_its_start_time_by_the_boot_clock() {
        struct Child(std::process::Child);
        impl Drop for Child {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let began = std::time::Instant::now();
        let child = Child(std::process::Command::new("sleep").arg("100").spawn().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(300));
        let ran = running_for(start_time(child.0.id() as i32).unwrap()).unwrap();
        let bound = began.elapsed() + std::time::Duration::from_millis(20);
        assert!(ran >= std::time::Duration::from_millis(300) && ran <= bound, "{ran:?}, at most {bound:?}");
    }

    /// A sandbox's init (1000) and its children: each child before its
    /// parent, whatever /proc's order.
    #[test]
    fn processes_are_listed_children_before_their_parents() {
        let found = vec![(1000, 1), (1001, 1000), (1002, 1001), (1003, 1000), (900, 1002)];
        assert_eq!(children_first(found), [900, 1002, 1003, 1001, 1000]);
        assert_eq!(children_first(vec![(7, 8), (8, 7)]).len(), 2, "a cycle ends");
    }

    /// Who runs as a workload's ids is said with at most `SHOWN` pids.
    #[test]
    fn in_use_names_a_bounded_list_of_pids() {
        let few = InUse::By(vec![1, 2]).to_string();
        assert_eq!(few, "processes run as its ids (pids [1, 2])");
        let many = InUse::By((1..=25).collect()).to_string();
        assert!(many.ends_with("20] and 5 more)") && !many.contains("21"), "{many}");
    }

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

    #[test]
    fn a_process_that_cannot_be_read_is_not_taken_for_gone() {
        let err = |errno| Err(std::io::Error::from_raw_os_error(errno));
        assert_eq!(from_stat(err(libc::ENOENT)), Ok(None));
        assert_eq!(from_stat(err(libc::ESRCH)), Ok(None));
        assert_eq!(from_stat(err(libc::EMFILE)), Err(Errno::EMFILE));
        assert_eq!(from_stat(err(libc::ENOMEM)), Err(Errno::ENOMEM));
        let stat = "7 (a) b) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0".to_owned();
        assert_eq!(from_stat(Ok(stat.into_bytes())), Ok(Some(4242)));
        assert_eq!(start_time_checked(i32::MAX), Ok(None));
    }

    /// A command name is the process's to choose, bytes that are not UTF-8
    /// included (any host user's, or a workload's, `prctl(PR_SET_NAME)`,
    /// or the name of the file it executes), and /proc shows it as it is:
    /// such a process is read all the same, not taken for one that cannot
    /// be read (which held a workload in doubt, and refused its start, for
    /// as long as any such process ran anywhere on the host).
    #[test]
    fn a_process_whose_name_is_not_utf8_is_read_all_the_same() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join(std::ffi::OsStr::from_bytes(b"x\xff\xfe"));
        std::os::unix::fs::symlink("/bin/sleep", &named).unwrap();
        struct Child(std::process::Child);
        impl Drop for Child {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Child(std::process::Command::new(&named).arg("100").spawn().unwrap());
        let pid = child.0.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read(format!("/proc/{pid}/comm")).unwrap() != b"x\xff\xfe\n" {
            assert!(Instant::now() < deadline, "the child's name is not the link's");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(start_time_checked(pid), Ok(Some(_))), "{:?}", start_time_checked(pid));
        assert_eq!(parent(pid), Some(std::process::id() as i32));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let found = running_as(&crate::idmap::IdRange { start: uid, count: 1 });
        assert!(found.as_ref().is_ok_and(|pids| pids.contains(&pid)), "{found:?}");
    }

    #[test]
    fn ends_within_waits_for_a_child_up_to_its_limit() {
        let mut slow = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        let begun = Instant::now();
        assert!(!ends_within(&slow, Duration::from_millis(200)));
        assert!(begun.elapsed() >= Duration::from_millis(200));
        slow.kill().unwrap();
        assert!(ends_within(&slow, Duration::from_secs(5)), "a killed child ends");
        slow.wait().unwrap();
        let mut quick = std::process::Command::new("true").spawn().unwrap();
        assert!(ends_within(&quick, Duration::from_secs(5)));
        quick.wait().unwrap();
    }
}
