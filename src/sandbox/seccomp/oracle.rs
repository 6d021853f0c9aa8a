//! The test oracle: the seccomp programs paddock loaded before it
//! compiled its own (`seccompiler`'s linear chain of the allowlist, then
//! clone3 -> ENOSYS as a second program), frozen with a copy of the
//! tables they were built from. The equivalence test holds the compiled
//! program to these programs' verdicts, so any change of policy, in the
//! tables or in the compiler, fails it: a deliberate change edits this
//! copy too, and the diff shows it twice. benches/seccomp.rs loads these
//! programs as the "before" of its measure. Test-only: it panics on error.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

#[cfg(target_arch = "x86_64")]
const SYS_IO_PGETEVENTS: i64 = 333;
#[cfg(target_arch = "aarch64")]
const SYS_IO_PGETEVENTS: i64 = 292;

/// `sys![SYS_read, ...]`: libc's numbers, written compactly.
macro_rules! sys {
    ($($name:ident),* $(,)?) => { &[$(libc::$name),*] };
}

#[rustfmt::skip]
const ALLOWED: &[i64] = sys![
    SYS_accept, SYS_accept4, SYS_adjtimex, SYS_bind, SYS_brk, SYS_capget, SYS_capset, SYS_chdir, SYS_clock_adjtime,
    SYS_clock_getres, SYS_clock_gettime, SYS_clock_nanosleep, SYS_close, SYS_close_range, SYS_connect,
    SYS_copy_file_range, SYS_dup, SYS_dup3, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2,
    SYS_eventfd2, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_faccessat, SYS_faccessat2, SYS_fadvise64,
    SYS_fallocate, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat, SYS_fchown, SYS_fchownat, SYS_fcntl,
    SYS_fdatasync, SYS_fgetxattr, SYS_flistxattr, SYS_flock, SYS_fremovexattr, SYS_fsetxattr, SYS_fstat,
    SYS_fstatfs, SYS_fsync, SYS_ftruncate, SYS_futex, SYS_futex_waitv, SYS_getcpu, SYS_getcwd, SYS_getdents64,
    SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getgroups, SYS_getitimer, SYS_getpeername, SYS_getpgid, SYS_getpid,
    SYS_getppid, SYS_getpriority, SYS_getrandom, SYS_getresgid, SYS_getresuid, SYS_get_robust_list, SYS_getrusage,
    SYS_getsid, SYS_getsockname, SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr,
    SYS_inotify_add_watch, SYS_inotify_init1, SYS_inotify_rm_watch, SYS_io_cancel, SYS_ioctl, SYS_io_destroy,
    SYS_io_getevents, SYS_ioprio_get, SYS_ioprio_set, SYS_io_setup, SYS_io_submit, SYS_kill, SYS_landlock_add_rule,
    SYS_landlock_create_ruleset, SYS_landlock_restrict_self, SYS_lgetxattr, SYS_linkat, SYS_listen, SYS_listxattr,
    SYS_llistxattr, SYS_lremovexattr, SYS_lseek, SYS_lsetxattr, SYS_madvise, SYS_membarrier, SYS_memfd_create,
    SYS_memfd_secret, SYS_mincore, SYS_mkdirat, SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap,
    SYS_mprotect, SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive, SYS_mq_timedsend,
    SYS_mq_unlink, SYS_mremap, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd, SYS_msync, SYS_munlock,
    SYS_munlockall, SYS_munmap, SYS_name_to_handle_at, SYS_nanosleep, SYS_newfstatat, SYS_openat, SYS_openat2,
    SYS_pidfd_open, SYS_pidfd_send_signal, SYS_pipe2, SYS_pkey_alloc, SYS_pkey_free, SYS_pkey_mprotect, SYS_ppoll,
    SYS_prctl, SYS_pread64, SYS_preadv, SYS_preadv2, SYS_prlimit64, SYS_process_mrelease, SYS_pselect6,
    SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_read, SYS_readahead, SYS_readlinkat, SYS_readv, SYS_recvfrom,
    SYS_recvmmsg, SYS_recvmsg, SYS_remap_file_pages, SYS_removexattr, SYS_renameat2, SYS_restart_syscall, SYS_rseq,
    SYS_rt_sigaction, SYS_rt_sigpending, SYS_rt_sigprocmask, SYS_rt_sigqueueinfo, SYS_rt_sigreturn,
    SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo, SYS_sched_getaffinity, SYS_sched_getattr,
    SYS_sched_getparam, SYS_sched_get_priority_max, SYS_sched_get_priority_min, SYS_sched_getscheduler,
    SYS_sched_rr_get_interval, SYS_sched_setaffinity, SYS_sched_setattr, SYS_sched_setparam,
    SYS_sched_setscheduler, SYS_sched_yield, SYS_seccomp, SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop,
    SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto, SYS_setfsgid, SYS_setfsuid, SYS_setgid, SYS_setgroups,
    SYS_setitimer, SYS_setpgid, SYS_setpriority, SYS_setregid, SYS_setresgid, SYS_setresuid, SYS_setreuid,
    SYS_set_robust_list, SYS_setsid, SYS_setsockopt, SYS_set_tid_address, SYS_setuid, SYS_setxattr, SYS_shmat,
    SYS_shmctl, SYS_shmdt, SYS_shmget, SYS_shutdown, SYS_sigaltstack, SYS_signalfd4, SYS_socketpair, SYS_splice,
    SYS_statfs, SYS_statx, SYS_symlinkat, SYS_sync, SYS_syncfs, SYS_sysinfo, SYS_tee, SYS_tgkill, SYS_timer_create,
    SYS_timer_delete, SYS_timer_getoverrun, SYS_timer_gettime, SYS_timer_settime, SYS_timerfd_create,
    SYS_timerfd_gettime, SYS_timerfd_settime, SYS_times, SYS_tkill, SYS_truncate, SYS_umask, SYS_uname,
    SYS_unlinkat, SYS_utimensat, SYS_vmsplice, SYS_wait4, SYS_waitid, SYS_write, SYS_writev, SYS_process_vm_readv,
    SYS_process_vm_writev, SYS_ptrace
];

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED_X86_64: &[i64] = sys![
    SYS_access, SYS_alarm, SYS_chmod, SYS_chown, SYS_creat, SYS_dup2, SYS_epoll_create, SYS_epoll_ctl_old,
    SYS_epoll_wait, SYS_epoll_wait_old, SYS_eventfd, SYS_fork, SYS_futimesat, SYS_getdents, SYS_getpgrp,
    SYS_getrlimit, SYS_get_thread_area, SYS_inotify_init, SYS_lchown, SYS_link, SYS_lstat, SYS_mkdir, SYS_mknod,
    SYS_open, SYS_pause, SYS_pipe, SYS_poll, SYS_readlink, SYS_rename, SYS_renameat, SYS_rmdir, SYS_select,
    SYS_setrlimit, SYS_set_thread_area, SYS_signalfd, SYS_stat, SYS_symlink, SYS_sync_file_range, SYS_time,
    SYS_unlink, SYS_utime, SYS_utimes, SYS_vfork, SYS_arch_prctl, SYS_modify_ldt
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[i64] = &[];

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_MODULE: u32 = 16;
#[cfg(target_arch = "x86_64")]
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_PACCT: u32 = 20;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_TIME: u32 = 25;
const CAP_SYS_TTY_CONFIG: u32 = 26;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[rustfmt::skip]
const BY_CAPABILITY: &[(u32, &[i64])] = &[
    (CAP_DAC_READ_SEARCH, sys![SYS_open_by_handle_at]),
    (CAP_SYS_MODULE, sys![SYS_delete_module, SYS_init_module, SYS_finit_module]),
    #[cfg(target_arch = "x86_64")]
    (CAP_SYS_RAWIO, sys![SYS_iopl, SYS_ioperm]),
    (CAP_SYS_CHROOT, sys![SYS_chroot]),
    (CAP_SYS_PTRACE, sys![
        SYS_kcmp, SYS_pidfd_getfd, SYS_process_madvise, SYS_process_vm_readv, SYS_process_vm_writev, SYS_ptrace,
    ]),
    (CAP_SYS_PACCT, sys![SYS_acct]),
    (CAP_SYS_ADMIN, sys![
        SYS_bpf, SYS_clone, SYS_clone3, SYS_fanotify_init, SYS_fsconfig, SYS_fsmount, SYS_fsopen, SYS_fspick,
        SYS_lookup_dcookie, SYS_mount, SYS_mount_setattr, SYS_move_mount, SYS_open_tree, SYS_perf_event_open,
        SYS_quotactl, SYS_quotactl_fd, SYS_setdomainname, SYS_sethostname, SYS_setns, SYS_syslog, SYS_umount2,
        SYS_unshare,
    ]),
    (CAP_SYS_BOOT, sys![SYS_reboot]),
    (CAP_SYS_NICE, sys![SYS_get_mempolicy, SYS_mbind, SYS_set_mempolicy, SYS_set_mempolicy_home_node]),
    (CAP_SYS_TIME, sys![SYS_settimeofday, SYS_clock_settime]),
    (CAP_SYS_TTY_CONFIG, sys![SYS_vhangup]),
    (CAP_SYSLOG, sys![SYS_syslog]),
    (CAP_BPF, sys![SYS_bpf]),
    (CAP_PERFMON, sys![SYS_perf_event_open]),
];

/// The capabilities BY_CAPABILITY names: the test's capability masks.
pub fn capabilities_used() -> Vec<u32> {
    let mut caps: Vec<u32> = BY_CAPABILITY.iter().map(|(cap, _)| *cap).collect();
    caps.sort_unstable();
    caps.dedup();
    caps
}

const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;
const AF_VSOCK: u64 = 40;
const PERSONALITIES: &[u64] = &[0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn condition(len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(0, len, op, value).expect("a valid condition on arg0")
}

fn rule(c: SeccompCondition) -> SeccompRule {
    SeccompRule::new(vec![c]).expect("a rule with one condition")
}

/// The programs paddock loaded, in order, for a workload that keeps
/// `capabilities`: the old `default_programs`, body unchanged.
pub fn programs(capabilities: u64) -> Vec<BpfProgram> {
    let has = |cap: u32| capabilities & (1 << cap) != 0;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().chain(ALLOWED_X86_64).chain([&SYS_IO_PGETEVENTS]).map(|s| (*s, Vec::new())).collect();
    for (cap, calls) in BY_CAPABILITY {
        if has(*cap) {
            rules.extend(calls.iter().map(|s| (*s, Vec::new())));
        }
    }
    if !has(CAP_SYS_ADMIN) {
        let no_namespaces = condition(SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0);
        rules.insert(libc::SYS_clone, vec![rule(no_namespaces)]);
        rules.insert(libc::SYS_clone3, Vec::new());
    }
    let not_vsock = condition(SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, AF_VSOCK);
    rules.insert(libc::SYS_socket, vec![rule(not_vsock)]);
    let personalities =
        PERSONALITIES.iter().map(|p| rule(condition(SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *p))).collect();
    rules.insert(libc::SYS_personality, personalities);
    let allow = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, ARCH)
        .expect("the allowlist filter");
    let mut filters = vec![allow];
    if !has(CAP_SYS_ADMIN) {
        filters.push(
            SeccompFilter::new(
                BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
                ARCH,
            )
            .expect("the clone3 filter"),
        );
    }
    filters.into_iter().map(|f| BpfProgram::try_from(f).expect("a program under 4096 instructions")).collect()
}
