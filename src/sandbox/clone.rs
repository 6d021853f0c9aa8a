//! The clone itself and everything the clone child runs before it becomes
//! the sandbox's init. The child runs only async-signal-safe system calls
//! on memory prepared before the clone (no allocation, no lock), so this is
//! safe from any process, including a multi-threaded one.
//!
//! The child's first steps, in order, and why:
//! 1. the parent-death signal, then a check that the parent is still the
//!    one that cloned it: a daemon killed at any point of a start takes the
//!    half-built sandbox with it, and never leaves it blocked;
//! 2. close every descriptor but its own few: a child blocked on its
//!    channel must not hold the daemon's lock, listening socket, logs or
//!    other sandboxes' channels (a successor daemon would be locked out);
//! 3. wait for "go" (the parent maps its ids and places it first; it
//!    records the sandbox while the init builds it, and the init forks
//!    the workload only once recorded: `spawn::release`);
//! 4. become the namespace's root (which clears the parent-death signal),
//!    install stdio, arm the signal again and check the parent again;
//! 5. execute the init (or, from a single-threaded `paddock run`, run it).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use super::sys;

/// struct clone_args, as of Linux 5.7 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones, into `cgroup_dir` when given and the kernel can (clone3 with
/// CLONE_INTO_CGROUP), else with plain clone. Returns clone's result (0 in
/// the child) and whether the child was born in the cgroup.
///
/// The child starts with the signals its init passes on to the workload
/// blocked (`init::FORWARDED`; this thread's mask is as it was after).
/// The init handles them only once its sandbox is built; until then a
/// signal with its default action, sent to a pid namespace's init from
/// outside (a stop right after the start), would be discarded, and the
/// workload would start and never get it. Blocked, it waits for the init.
///
/// With CLONE_NEWUSER, the new user namespace is owned by `owner` (the
/// host uid its root is mapped to), not by root: the kernel charges what
/// the namespace's processes hold of the per-user counts (inotify
/// instances and watches, namespaces, message queues) to its owner as
/// well, so a namespace root made would have a workload use up root's
/// (128 inotify instances by default: after them no root process on the
/// host, systemd and a restarted paddock among them, could watch a file).
/// The calling thread acts as `owner` for the clone alone, keeping its
/// capabilities (SECBIT_NO_SETUID_FIXUP); the child starts from the
/// default securebits, as the kernel gives every new user namespace.
///
/// # Safety
/// As fork: the caller's child side must only run async-signal-safe code.
pub unsafe fn clone_sandbox(
    flags: u64,
    owner: Option<libc::uid_t>,
    cgroup_dir: Option<&OwnedFd>,
    pidfd: &mut libc::c_int,
) -> (libc::c_long, bool) {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let owner = owner.filter(|_| flags & libc::CLONE_NEWUSER as u64 != 0);
    // SAFETY: act_as's contract is met below: whatever the clone did, this
    // thread is made root again (`act_as_root`) before it returns.
    let acted = match owner.map(|owner| unsafe { act_as(owner) }) {
        Some(Err(errno)) => {
            Errno::set(errno);
            return (-1, false);
        }
        Some(Ok(acted)) => Some(acted),
        None => None,
    };
    let mut before = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&super::init::forwarded()), Some(&mut before));
    // SAFETY: the caller's contract, passed on.
    let cloned = unsafe { clone_raw(flags, cgroup_dir, pidfd) };
    let errno = Errno::last();
    // (The child, in its new user namespace, has the default securebits
    // and every capability there, as the kernel gives it: nothing to undo.)
    if let Some(acted) = acted.filter(|_| cloned.0 != 0) {
        // SAFETY: raw system calls with integer arguments, in the caller.
        unsafe { act_as_root(acted) };
    }
    if cloned.0 != 0 {
        // The mask this thread had.
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
    }
    Errno::set(errno);
    cloned
}

/// Capabilities are kept across a change of uids (prctl(2)'s securebits).
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;

/// What `act_as` changed, to be put back: the thread's securebits, and
/// what the kernel resets at a change of effective uid: the process's
/// dumpability (a daemon that cloned would otherwise dump no core) and
/// the thread's parent-death signal (the zygote's, which ties it to the
/// daemon, would otherwise be gone after its first remapped clone).
/// Dumpability is the process's: two threads acting at once could put
/// back each other's. None do: sandboxes are cloned one at a time, by
/// the zygote, the daemon's event loop or `paddock run`'s one thread.
#[derive(Clone, Copy)]
struct Acted {
    bits: libc::c_ulong,
    dumpable: libc::c_ulong,
    parent_death: libc::c_int,
}

/// Makes `owner` this thread's effective uid, its capabilities kept.
/// Raw system calls: this thread only. Its real and saved uids stay 0, so
/// no process of `owner`'s may signal, trace or set the limits of it.
///
/// # Safety
/// The calling thread must be made root again (`act_as_root`) after its clone.
unsafe fn act_as(owner: libc::uid_t) -> Result<Acted, Errno> {
    // SAFETY: prctl and setresuid with integer arguments, but
    // PR_GET_PDEATHSIG's, a pointer to an int on our stack.
    unsafe {
        let (bits, dumpable) =
            (libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0), libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0));
        let mut parent_death: libc::c_int = 0;
        if bits < 0 || dumpable < 0 || libc::prctl(libc::PR_GET_PDEATHSIG, &mut parent_death as *mut libc::c_int) != 0 {
            return Err(Errno::last());
        }
        let acted = Acted { bits: bits as libc::c_ulong, dumpable: dumpable as libc::c_ulong, parent_death };
        if libc::prctl(libc::PR_SET_SECUREBITS, acted.bits | SECBIT_NO_SETUID_FIXUP, 0, 0, 0) != 0 {
            return Err(Errno::last());
        }
        if libc::syscall(libc::SYS_setresuid, -1 as libc::c_int, owner, -1 as libc::c_int) != 0 {
            let errno = Errno::last();
            libc::prctl(libc::PR_SET_SECUREBITS, acted.bits, 0, 0, 0);
            return Err(errno);
        }
        Ok(acted)
    }
}

/// The calling thread's effective uid back to 0, its securebits, the
/// process's dumpability and the thread's parent-death signal as they were. A thread left acting as a
/// workload's uid would run on as it: the process aborts instead (none of
/// these calls can fail for a process whose real uid is 0 and that holds
/// CAP_SETPCAP, as `act_as` needed).
///
/// # Safety
/// Only after `act_as` on this thread, with what it returned.
unsafe fn act_as_root(acted: Acted) {
    // SAFETY: setresuid and prctl with integer arguments; abort.
    unsafe {
        if libc::syscall(libc::SYS_setresuid, -1 as libc::c_int, 0, -1 as libc::c_int) != 0
            || libc::prctl(libc::PR_SET_SECUREBITS, acted.bits, 0, 0, 0) != 0
            // (2, "suidsafe", which a change of ids under fs.suid_dumpable = 2
            // gives, cannot be set: the reset has left it so already.)
            || (acted.dumpable <= 1 && libc::prctl(libc::PR_SET_DUMPABLE, acted.dumpable, 0, 0, 0) != 0)
            || (acted.parent_death != 0
                && libc::prctl(libc::PR_SET_PDEATHSIG, acted.parent_death as libc::c_ulong, 0, 0, 0) != 0)
        {
            libc::abort();
        }
    }
}

/// `clone_sandbox`'s clone.
///
/// # Safety
/// As `clone_sandbox`.
unsafe fn clone_raw(flags: u64, cgroup_dir: Option<&OwnedFd>, pidfd: &mut libc::c_int) -> (libc::c_long, bool) {
    if let Some(dir) = cgroup_dir {
        // With CLONE_PARENT the child signals its parent's parent as its
        // parent would, and clone3 wants no exit signal of its own.
        let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 };
        let args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            pidfd: pidfd as *mut libc::c_int as u64,
            exit_signal,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: `args` is a valid clone_args of the size passed; with no
        // stack given, clone3 continues the child on a copy of ours, as fork.
        let ret =
            unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
        // Kernels before 5.7 lack clone3's cgroup field: fall back below.
        if ret >= 0 || !matches!(Errno::last(), Errno::ENOSYS | Errno::E2BIG) {
            return (ret, ret > 0);
        }
    }
    // SAFETY: clone with a null stack behaves as fork; `pidfd` receives the pidfd (CLONE_PIDFD).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    (ret, false)
}

/// Descriptors the clone child puts on 0, 1 and 2 (-1: leave as is).
#[derive(Clone, Copy)]
pub struct Stdio {
    pub input: RawFd,
    pub output: RawFd,
}

impl Stdio {
    /// dup2 only: async-signal-safe. dup2 clears close-on-exec on the copy.
    ///
    /// # Safety
    /// The descriptors, when not -1, must be open.
    unsafe fn install(self) -> bool {
        // SAFETY: dup2 on open descriptors (the caller's contract).
        unsafe {
            (self.input < 0 || libc::dup2(self.input, 0) == 0)
                && (self.output < 0 || (libc::dup2(self.output, 1) == 1 && libc::dup2(self.output, 2) == 2))
        }
    }
}

/// The most descriptors the child keeps beyond 0-2: its channel, paddock's
/// executable, a pidfd of its parent, and stdin and stdout for the sandbox.
const KEEP: usize = 5;

/// What the clone child needs before it may block, all prepared before the
/// clone.
#[derive(Clone, Copy)]
pub struct Child {
    /// A pidfd of the process that clones. (Not getppid(): in a new pid
    /// namespace a child sees its parent as pid 0, before and after the
    /// parent dies.)
    pub parent: RawFd,
    pub die_with_parent: bool,
    /// The child's end of the channel.
    pub channel: RawFd,
    /// paddock's executable, for the re-executed init (-1 in place).
    pub exe: RawFd,
    pub stdio: Stdio,
}

impl Child {
    /// The descriptors to keep, ascending, -1 for none.
    fn keep(&self) -> [RawFd; KEEP] {
        let mut keep = [self.channel, self.exe, self.parent, self.stdio.input, self.stdio.output];
        keep.sort_unstable();
        keep
    }

    /// Arms the parent-death signal and checks the parent is still there.
    ///
    /// # Safety
    /// In the clone child: prctl and poll only.
    unsafe fn tie_to_parent(&self) -> bool {
        let mut parent = libc::pollfd { fd: self.parent, events: libc::POLLIN, revents: 0 };
        // SAFETY: prctl with integer arguments; poll on one pollfd on our stack.
        unsafe {
            !self.die_with_parent
                || (libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0
                    // A pidfd polls readable once its process has exited: the
                    // parent died before the signal was armed.
                    && libc::poll(&mut parent, 1, 0) == 0)
        }
    }

    /// Steps 1 to 3 of the module's list: returns once "go" arrived.
    ///
    /// # Safety
    /// In the child of a fork-like clone: async-signal-safe calls only.
    unsafe fn prologue(&self) {
        // SAFETY: raw system calls with integer arguments and our own stack memory.
        unsafe {
            if !self.tie_to_parent() {
                libc::_exit(125);
            }
            // Everything but 0-2 and `keep`.
            let _ = sys::close_all_but(&self.keep());
            // Wait until the parent has written our id maps and placed us in
            // our cgroup.
            let mut go = 0u8;
            if libc::read(self.channel, &mut go as *mut u8 as *mut libc::c_void, 1) != 1 {
                libc::_exit(125);
            }
        }
    }

    /// Step 4: the namespace's root, stdio, the parent-death signal again.
    /// `keepcaps` keeps the permitted capabilities across the uid change
    /// (for the in-place init, which does not exec).
    ///
    /// # Safety
    /// In the child of a fork-like clone: async-signal-safe calls only.
    unsafe fn become_root(&self, keepcaps: bool) -> bool {
        // Until now our real and saved uid are still the host's root's
        // (kuid 0; the effective one is the slice's start when the cloner
        // acted as it, `act_as`), and our gids all root's, which the new
        // namespace does not map; becoming its uid/gid 0 (the slice's start)
        // is what gives us capabilities in it. (With no user namespace of
        // its own, `user = "host"`, this leaves the host's root as it is.)
        // Raw syscalls: glibc's wrappers would try to signal the parent's threads.
        // SAFETY: raw system calls with integer arguments only.
        unsafe {
            (!keepcaps || libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) == 0)
                && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
                && libc::syscall(libc::SYS_setresgid, 0, 0, 0) == 0
                && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
                && (!keepcaps || libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) == 0)
                && self.stdio.install()
                // The change of credentials cleared the parent-death signal.
                && self.tie_to_parent()
        }
    }

    /// In the clone child: becomes the sandbox's init by re-executing
    /// paddock as `__init`.
    ///
    /// # Safety
    /// `argv` and `envp` must be NULL-terminated arrays of valid C strings,
    /// the descriptors open, and the caller the child of a fork-like clone.
    pub unsafe fn exec_init(self, argv: *const *const libc::c_char, envp: *const *const libc::c_char) -> ! {
        // SAFETY: async-signal-safe system calls on memory prepared before
        // the clone (the function's contract).
        unsafe {
            self.prologue();
            if !self.become_root(false) {
                libc::_exit(125);
            }
            // Nothing goes through the exec but the channel on which the init
            // reads its configuration.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            libc::fcntl(self.channel, libc::F_SETFD, 0);
            libc::syscall(libc::SYS_execveat, self.exe, c"".as_ptr(), argv, envp, libc::AT_EMPTY_PATH);
            libc::_exit(125)
        }
    }

    /// In the clone child of a single-threaded parent (`paddock run`, the
    /// daemon's zygote): becomes the namespace's root keeping the
    /// capabilities it has there, then runs the init here, with no exec.
    ///
    /// # Safety
    /// The process must have been single-threaded at the clone.
    pub unsafe fn run_init(self) -> ! {
        // SAFETY: a single-threaded process: no lock or allocator state can
        // be held by another thread, so the init may run any code.
        unsafe {
            self.prologue();
            // With exec, the kernel grants the namespace's root its
            // capabilities; here KEEPCAPS kept the permitted set, raised below.
            let raised = self.become_root(true) && sys::cap_permitted().and_then(sys::capset).is_ok();
            // As after the exec: nothing open but 0-2 and the channel (the
            // init finds the daemon's end at the lowest free number).
            let _ = sys::close_all_but(&[self.channel]);
            let code = if raised { super::init::main(self.channel) } else { 125 };
            libc::_exit(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acting as a workload's root for a clone leaves the thread as it was:
    /// root, its parent-death signal armed (the kernel clears it at a
    /// change of effective uid, and the zygote's ties it to the daemon),
    /// the process dumpable (the kernel resets that too).
    #[test]
    fn acting_as_a_workloads_root_leaves_the_thread_as_it_was() {
        assert!(nix::unistd::geteuid().is_root(), "this test changes its effective uid and must run as root");
        // SAFETY: the child makes only system calls (no allocation, no
        // lock another thread may hold) and leaves by _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: prctl and raw system calls with integer arguments
                // and pointers to our own stack; _exit.
                unsafe {
                    let set = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR1, 0, 0, 0) == 0
                        && libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) == 0;
                    if !set {
                        libc::_exit(1);
                    }
                    let acted = act_as(6_900_000);
                    let acting = libc::geteuid() == 6_900_000;
                    if let Ok(acted) = acted {
                        act_as_root(acted);
                    }
                    let mut signal: libc::c_int = 0;
                    libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int);
                    let dumpable = libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0);
                    let code = match (acting, libc::geteuid(), signal, dumpable) {
                        (false, ..) => 2,
                        (_, 1.., ..) => 3,
                        (_, 0, s, _) if s != libc::SIGUSR1 => 4,
                        (_, 0, _, d) if d != 1 => 5,
                        _ => 0,
                    };
                    libc::_exit(code);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "1: could not set up; 2: never acted as the uid; 3: not root again; 4: its parent-death signal lost; 5: not dumpable"
                );
            }
        }
    }

    /// The clone child starts with the signals the init passes on blocked
    /// (a stop sent before the init handles them waits for it), and the
    /// cloning thread's own mask is left as it was.
    #[test]
    fn the_child_starts_with_the_forwarded_signals_blocked() {
        let mut pidfd: libc::c_int = -1;
        // SAFETY: the child runs only pthread_sigmask, sigismember and
        // _exit, all async-signal-safe.
        let (pid, _) = unsafe { clone_sandbox(libc::CLONE_PIDFD as u64, None, None, &mut pidfd) };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                let mut now: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
                let blocked =
                    super::super::init::FORWARDED.iter().all(|s| libc::sigismember(&now, *s as libc::c_int) == 1);
                libc::_exit(if blocked { 0 } else { 1 });
            }
        }
        assert!(pid > 0, "clone: {}", Errno::last());
        // SAFETY: the pidfd CLONE_PIDFD gave us.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) });
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid as i32), 0));
        // SAFETY: reads this thread's mask into a zeroed sigset on our
        // stack, and asks it of SIGTERM.
        let term_blocked = unsafe {
            let mut mine: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mine);
            libc::sigismember(&mine, libc::SIGTERM)
        };
        assert_eq!(term_blocked, 0, "this thread's mask is as it was");
    }
}
