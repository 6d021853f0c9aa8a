//! Thin wrappers over system calls that nix does not cover, or not as
//! paddock needs them: the new mount API (fsopen and fsmount, open_tree,
//! move_mount, mount_setattr), capabilities (capset, the permitted set),
//! loading a seccomp program without forcing no_new_privs, pidfds (open,
//! getfd, send_signal), close_range, signal dispositions, loopback up,
//! descriptors received over a socket (every one, even a list cut short),
//! and this process's thread count.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x10_0000;

#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount at `path` (recursive with `recursive`),
/// made private. A copy of a shared mount (every mount of a systemd host
/// is) is a peer of it: a mount made on the copy inside the sandbox (one
/// `[[mounts]]` target below another) would appear on the host, and the
/// host's later mounts there would appear inside.
pub fn open_tree_clone(dirfd: Option<BorrowedFd<'_>>, path: &CStr, recursive: bool) -> Result<OwnedFd, Errno> {
    let tree = open_tree_as_is(dirfd, path, recursive)?;
    set_mount_attr(tree.as_fd(), MountAttr { propagation: libc::MS_PRIVATE, ..MountAttr::default() }, recursive)?;
    Ok(tree)
}

/// open_tree(OPEN_TREE_CLONE) itself: the copy keeps the source's
/// propagation. For a source in a mount namespace whose every mount was
/// made private (the init's, once `rootfs::build` began), where
/// `open_tree_clone`'s second call would change nothing.
pub fn open_tree_as_is(dirfd: Option<BorrowedFd<'_>>, path: &CStr, recursive: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    let dirfd = dirfd.map_or(libc::AT_FDCWD, |fd| fd.as_raw_fd());
    // SAFETY: `path` is a valid C string; the kernel returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) };
    Errno::result(fd).map(|fd| {
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    })
}

/// Sets attributes on a detached mount: read-only, and/or an idmapping
/// taken from the user namespace `userns`.
pub fn mount_setattr(
    tree: BorrowedFd<'_>,
    attr_set: u64,
    userns: Option<BorrowedFd<'_>>,
    recursive: bool,
) -> Result<(), Errno> {
    let attr = MountAttr { attr_set, userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64), ..MountAttr::default() };
    set_mount_attr(tree, attr, recursive)
}

fn set_mount_attr(tree: BorrowedFd<'_>, attr: MountAttr, recursive: bool) -> Result<(), Errno> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `attr` lives across the call and its size is passed; "" is a valid C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// A new filesystem of type `fstype` named `source` (mountinfo's source
/// field, as mount(2)'s first argument), as a detached mount with the
/// mount attributes `attrs` (`MOUNT_ATTR_*`; a read-only one is made so
/// down to its superblock, as `MS_RDONLY` does): each option is a flag (no
/// value) or a key and its value, as mount(2)'s data would say `key=value`.
/// Nothing is resolved by path: the caller attaches it onto a descriptor
/// (`move_mount_onto`) and reaches into it through the one returned.
pub fn fs_mount(
    fstype: &CStr,
    source: &CStr,
    options: &[(&CStr, Option<&CStr>)],
    attrs: u64,
) -> Result<OwnedFd, Errno> {
    // SAFETY: `fstype` is a valid C string; the kernel returns a new fd or -1.
    let context =
        Errno::result(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) }).map(|fd| {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
        })?;
    let config = |command: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
        let (key, value) = (key.map_or(std::ptr::null(), CStr::as_ptr), value.map_or(std::ptr::null(), CStr::as_ptr));
        // SAFETY: `context` is open; key and value are valid C strings or
        // null where the command takes none.
        Errno::result(unsafe { libc::syscall(libc::SYS_fsconfig, context.as_raw_fd(), command, key, value, 0) })
    };
    config(FSCONFIG_SET_STRING, Some(c"source"), Some(source))?;
    let readonly = (attrs & MOUNT_ATTR_RDONLY != 0).then_some((c"ro", None));
    for (key, value) in options.iter().copied().chain(readonly) {
        let command = if value.is_some() { FSCONFIG_SET_STRING } else { FSCONFIG_SET_FLAG };
        config(command, Some(key), value)?;
    }
    config(FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: `context` is open and holds a created superblock; the kernel
    // returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    Errno::result(fd).map(|fd| {
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    })
}

/// Attaches a detached mount onto the object `target` refers to.
pub fn move_mount_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: both descriptors are open; "" is a valid C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

/// openat2(2), called again while the kernel answers EAGAIN: with
/// RESOLVE_IN_ROOT or RESOLVE_BENEATH, a `..` of the walk that a mount or
/// a rename anywhere on the host raced (as sandboxes starting beside this
/// one mount all the time) is refused that way, and the kernel asks to be
/// called again. At most 128 times: each try is microseconds, and fails
/// only when it is raced.
pub fn openat2_retrying<Fd: AsFd>(dir: Fd, path: &std::path::Path, how: nix::fcntl::OpenHow) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dir.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 128 => tries += 1,
            opened => return opened,
        }
    }
}

/// The id of the mount `fd` lies on (statx's STATX_MNT_ID, Linux 5.8):
/// a mount keeps its id when it is moved, so a tree's id before
/// `move_mount_onto` is the id of what a path leads to while nothing
/// covers it.
pub fn mount_id(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    // SAFETY: statx is plain data, for which all zeroes is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open, "" is a valid C string, and `st` is libc's
    // statx, the kernel's struct of 256 bytes (padding included), which
    // the kernel writes at most whole.
    let rc = unsafe {
        libc::syscall(libc::SYS_statx, fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut st)
    };
    Errno::result(rc)?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(st.stx_mnt_id)
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the effective and permitted sets of this thread to `set` (a bit
/// mask of capability numbers) and clears the inheritable set.
pub fn capset(set: u64) -> Result<(), Errno> {
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let lo = set as u32;
    let hi = (set >> 32) as u32;
    let data = [
        CapData { effective: lo, permitted: lo, inheritable: 0 },
        CapData { effective: hi, permitted: hi, inheritable: 0 },
    ];
    // SAFETY: header and two data structs of the v3 layout, alive across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// Whether this thread holds capability `cap` in its effective set.
pub fn has_capability(cap: u32) -> bool {
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: header and two data structs of the v3 layout, which the kernel fills.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &header as *const CapHeader, data.as_mut_ptr()) };
    rc == 0 && data[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0
}

/// Sets every signal, real-time ones included, to its default action.
/// Raw rt_sigaction: glibc's wrapper refuses the two real-time signals it
/// keeps for itself, which a parent may nevertheless have left ignored.
pub fn reset_signal_dispositions() {
    /// The kernel's struct sigaction on x86_64 and aarch64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL (handler 0) installs no code; the struct outlives the call.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8,
            )
        };
    }
}

/// The permitted set of this thread, as a bit mask.
pub fn cap_permitted() -> Result<u64, Errno> {
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and room for two data structs of the v3 layout.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &header as *const CapHeader, data.as_mut_ptr()) };
    Errno::result(rc)?;
    Ok(u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32)
}

/// Loads a seccomp program. Unlike `seccompiler::apply_filter`, this does
/// not set no_new_privs: the manifest decides that separately, and the
/// caller still holds CAP_SYS_ADMIN in its user namespace.
pub fn seccomp_load(program: &[libc::sock_filter]) -> Result<(), Errno> {
    let len = u16::try_from(program.len()).map_err(|_| Errno::EINVAL)?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let rc =
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog) };
    Errno::result(rc).map(drop)
}

/// Brings the loopback interface up in the current network namespace.
pub fn loopback_up() -> Result<(), Errno> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`, which is valid.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) })?;
    // SAFETY: the union member written by SIOCGIFFLAGS is ifru_flags.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above, SIOCSIFFLAGS reads `req`.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &req) }).map(drop)
}

/// Whether `errno` says the host (or this process) ran out of descriptors,
/// memory, space or processes (EAGAIN from clone or fork: threads-max,
/// pid_max, or a pids limit above the sandbox's, which is empty when it is
/// cloned into it). A start that fails so is the daemon's failure, retried
/// without counting against the workload: a fork bomb in one workload that
/// used up the host's processes does not count against the others.
pub fn is_exhausted(errno: Errno) -> bool {
    matches!(errno, Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOSPC | Errno::EAGAIN)
}

/// A pidfd for an existing process (not necessarily a child).
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A copy of descriptor `fd` of the process a pidfd refers to (Linux 5.6;
/// needs ptrace rights over it, which the host's root has).
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags, and returns a new fd or -1.
    let got = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: the kernel just installed this descriptor in our table; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// Sends `signal` to the process a pidfd refers to: unlike kill(2), it
/// cannot reach a process that took a recycled pid.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> Result<(), Errno> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    Errno::result(rc).map(drop)
}

/// What one `recv_with_fds` got.
#[derive(Debug)]
pub struct Received {
    pub bytes: usize,
    /// Every descriptor the kernel installed with them, owned: closed
    /// unless kept.
    pub fds: Vec<OwnedFd>,
    /// MSG_CTRUNC: more descriptors were sent than `fds` holds (there was
    /// room for no more, or this process ran out of descriptors).
    pub fds_cut: bool,
    /// MSG_TRUNC: a datagram was longer than the buffer.
    pub truncated: bool,
}

/// `recvmsg` with room for `max_fds` descriptors (close-on-exec). Unlike
/// nix's `cmsgs()`, which yields none once the kernel cut the list short
/// (MSG_CTRUNC), every descriptor it did install is returned, owned, so
/// none stays open unseen: a client sending more than the room, or one
/// sending while this process is short of descriptors, leaked each one
/// the kernel had installed.
pub fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    flags: libc::c_int,
) -> Result<Received, Errno> {
    let room = (max_fds * std::mem::size_of::<RawFd>()) as libc::c_uint;
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(room) } as usize;
    // u64s: aligned as a cmsghdr must be.
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data (musl's has padding fields); all zeros is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at `iov` (over `buf`) and `control`, both live and
    // as long as it says, for the length of the call.
    let got = Errno::result(unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) })?;
    let mut fds = Vec::new();
    // SAFETY: msg is the header recvmsg filled: msg_control and the
    // msg_controllen it set describe what the kernel wrote into `control`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR and CMSG_NXTHDR return only headers that lie within msg_controllen.
        let header = unsafe { cmsg.read_unaligned() };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: arithmetic on a header the kernel wrote (CMSG_LEN of nothing is the header's own length).
            let (data, header_len) = unsafe { (libc::CMSG_DATA(cmsg), libc::CMSG_LEN(0) as usize) };
            // As far as the header says, and never past what the kernel wrote.
            let end = control.as_ptr().cast::<u8>() as usize + msg.msg_controllen as usize;
            let len = (header.cmsg_len as usize).saturating_sub(header_len).min(end.saturating_sub(data as usize));
            for i in 0..len / std::mem::size_of::<RawFd>() {
                // SAFETY: the kernel wrote `len` bytes of descriptors after the header, within `control`;
                // each is one it installed in our table just now, which nothing else owns.
                fds.push(unsafe { OwnedFd::from_raw_fd(data.cast::<RawFd>().add(i).read_unaligned()) });
            }
        }
        // SAFETY: as above: the next header within msg_controllen, or null.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(Received {
        bytes: got as usize,
        fds,
        fds_cut: msg.msg_flags & libc::MSG_CTRUNC != 0,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    })
}

/// Sets or clears `fd`'s close-on-exec flag: a descriptor handed to the
/// next image across an exec is cleared, then set again once taken (or
/// once the exec failed).
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(if on { FdFlag::FD_CLOEXEC } else { FdFlag::empty() })).map(drop)
}

/// Closes every descriptor but 0-2 and `keep` (in ascending order), by
/// the gaps between them (close_range(2), Linux 5.9). Allocates nothing:
/// the clone child calls it.
pub fn close_all_but(keep: &[RawFd]) -> Result<(), Errno> {
    let close = |first: RawFd, last: u32| {
        // SAFETY: close_range with integer arguments only; what it closes,
        // the caller holds nothing of (it keeps what it uses in `keep`).
        Errno::result(unsafe { libc::syscall(libc::SYS_close_range, first as u32, last, 0u32) }).map(drop)
    };
    let mut next: RawFd = 3;
    for &fd in keep {
        if fd >= next {
            if fd > next {
                close(next, (fd - 1) as u32)?;
            }
            next = fd + 1;
        }
    }
    close(next, u32::MAX)
}

/// Marks every descriptor from `first` up close-on-exec (close_range(2)
/// with CLOSE_RANGE_CLOEXEC, Linux 5.11): whatever the init or the daemon
/// held, even without O_CLOEXEC, does not reach the workload, while a
/// descriptor that reports a failed exec still works until the exec.
pub fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range with integer arguments only; it changes descriptor flags, not memory.
    Errno::result(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) }).map(drop)
}

/// Takes a variable a previous image of this process set for this one
/// (an upgrade's hand-over): its value, unset so that no child sees it.
/// Unset only while this process is one thread (its callers run at the
/// daemon's start, before any other); otherwise left, and harmless: what
/// it names is taken once, and close-on-exec again.
pub fn take_env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok()?;
    if thread_count() == 1 {
        // SAFETY: this process has one thread, so nothing reads the
        // environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    Some(value)
}

/// Threads of this process, from /proc/self/stat (field 20); `usize::MAX`
/// when it cannot be read.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(17)?.parse().ok()))
        .unwrap_or(usize::MAX)
}

/// Ignores SIGABRT in a process whose clone children run the init in place
/// (the zygote, `paddock run`). musl's `raise` signals the thread id it
/// cached at the process's start, which a raw clone child does not update:
/// an init that aborts (a failed allocation, a panic while panicking)
/// would send its SIGABRT to its parent when the two share a pid
/// namespace. Ignored here, it does nothing to the parent; the init itself
/// still dies (musl's `abort` ends in a crash), and the parent's own
/// `abort` resets the handler before it raises again. A workload never
/// inherits it: its dispositions are reset before its exec.
pub fn ignore_stray_abort() {
    // SAFETY: installs SIG_IGN, no code; nothing else is changed.
    unsafe { libc::signal(libc::SIGABRT, libc::SIG_IGN) };
}

/// The signals the daemon keeps blocked in every thread and takes on a
/// thread of its own (`daemon::signals`): SIGTERM, SIGINT and SIGHUP,
/// which its loop acts on, and the real-time signal that wakes that
/// thread (`daemon_wake_signal`).
pub fn daemon_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset and sigaddset on a set on our stack (both
    // async-signal-safe).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, daemon_wake_signal()] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// The real-time signal that wakes the daemon's signal-taking thread.
pub fn daemon_wake_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Unblocks `daemon_signals` in the calling thread: in a child before its
/// exec (std's `Command` keeps the parent's mask, and a CNI plugin, and
/// what it leaves running, would otherwise never take them).
/// Async-signal-safe.
pub fn unblock_daemon_signals() {
    let set = daemon_signals();
    // SAFETY: pthread_sigmask on a set on our stack: async-signal-safe, as
    // a `pre_exec` closure must be.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    use nix::sys::socket::{AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair};

    use super::*;

    /// A thread without CAP_SETPCAP is told so (a remapped start is then
    /// refused naming it, not as a bare EPERM of its clone).
    #[test]
    fn a_capability_dropped_is_seen_gone() {
        assert!(nix::unistd::geteuid().is_root(), "this test drops capabilities and must run as root");
        assert!(has_capability(8), "root holds CAP_SETPCAP");
        // SAFETY: the child makes only system calls and leaves by _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match capset(1 << 5) {
                    Ok(()) => u8::from(has_capability(8)) * 2 + u8::from(!has_capability(5)) * 4,
                    Err(_) => 1,
                };
                // SAFETY: _exit ends the child without the parent's atexit handlers.
                unsafe { libc::_exit(i32::from(code)) }
            }
            nix::unistd::ForkResult::Parent { child } => assert_eq!(
                nix::sys::wait::waitpid(child, None).unwrap(),
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "1: capset failed; 2: CAP_SETPCAP still seen; 4: CAP_KILL not seen"
            ),
        }
    }

    /// More descriptors than the room: those the kernel installed are
    /// returned, owned (nix's `cmsgs()` gave none, leaving them open).
    #[test]
    fn descriptors_cut_short_are_returned_owned() {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::empty()).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let sent = [null.as_raw_fd(); 5];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"x")],
            &[ControlMessage::ScmRights(&sent)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let got = recv_with_fds(b.as_fd(), &mut [0u8; 4], 2, 0).unwrap();
        assert_eq!((got.bytes, got.fds.len(), got.fds_cut, got.truncated), (1, 2, true, false));
        let null_rdev = nix::sys::stat::fstat(&null).unwrap().st_rdev;
        for fd in &got.fds {
            assert_eq!(nix::sys::stat::fstat(fd).unwrap().st_rdev, null_rdev, "each is /dev/null");
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec");
        }
        // Room enough: all, none cut.
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"y")],
            &[ControlMessage::ScmRights(&sent[..3])],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let got = recv_with_fds(b.as_fd(), &mut [0u8; 4], 3, 0).unwrap();
        assert_eq!((got.bytes, got.fds.len(), got.fds_cut), (1, 3, false));
    }
}
