//! The compiled filter is the old policy: for every capability mask that
//! changes it, its verdict is the one of the oracle's seccompiler programs
//! stacked as the kernel stacks them, for every number up to 1100, x32's
//! numbers, foreign architectures and a spread of arguments. Then the
//! compiler itself: far jumps, its errors, and the kernel taking and
//! applying what it emits.

use std::collections::BTreeMap;

use super::bpf::{Action, ArgTest, CompileError, Policy, Verdict, Width, compile};
use super::interp::{self, Data};
use super::{AUDIT_ARCH, X32_SYSCALL_BIT, default_programs, oracle, profile};

const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

fn old_programs(capabilities: u64) -> Vec<Vec<libc::sock_filter>> {
    let convert = |i: &seccompiler::sock_filter| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k };
    oracle::programs(capabilities).iter().map(|p| p.iter().map(convert).collect()).collect()
}

fn new_program(capabilities: u64) -> Vec<libc::sock_filter> {
    let mut programs = default_programs(capabilities).unwrap();
    assert_eq!(programs.len(), 1, "one program");
    programs.remove(0)
}

/// None, all, and each capability the tables name alone (CAP_SYS_ADMIN among them).
fn masks() -> Vec<u64> {
    let mut caps = oracle::capabilities_used();
    caps.extend(profile::BY_CAPABILITY.iter().map(|(cap, _)| *cap));
    caps.sort_unstable();
    caps.dedup();
    [0, u64::MAX].into_iter().chain(caps.into_iter().map(|cap| 1 << cap)).collect()
}

fn data(nr: u32, arch: u32, args: [u64; 6]) -> Data {
    Data { nr, arch, args }
}

/// Values for the first argument of clone, clone3, socket and personality.
fn arg_values() -> Vec<u64> {
    let namespaces = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ]
    .map(|f| f as u64);
    let thread = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS) as u64;
    let all_namespaces = namespaces.iter().fold(0, |all, f| all | f);
    let high = [1 << 32, 0xffff_ffff_0000_0000];
    let mut values = vec![0, all_namespaces, thread, thread | libc::CLONE_NEWUSER as u64, u64::MAX, 0xffff_ffff];
    values.extend(high);
    values.extend(high.map(|h| h | all_namespaces));
    values.push(libc::CLONE_NEWTIME as u64);
    for flag in namespaces {
        values.extend([flag, flag | libc::SIGCHLD as u64, flag | 1 << 32, flag | thread]);
    }
    // Socket families, AF_VSOCK (40) with and without high bits.
    values.extend(0..=64);
    values.extend(high.map(|h| h | 40));
    // personality: the allowed values, with high bits, and others.
    for p in [0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        values.push(p);
        values.extend(high.map(|h| h | p));
    }
    values.extend([0x0040000, 0x0400000, 0x0020000 | 0x0400000, 0xffff_fffe, 0x20009]);
    values.extend((0..64).map(|bit| 1 << bit));
    values
}

fn inputs() -> Vec<Data> {
    let mut inputs = Vec::new();
    let numbers = (0..=1100).chain([0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, u32::MAX]);
    for nr in numbers {
        for args in [[0; 6], [u64::MAX; 6]] {
            inputs.push(data(nr, AUDIT_ARCH, args));
            inputs.push(data(nr | X32_SYSCALL_BIT, AUDIT_ARCH, args));
        }
    }
    let foreign = [AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64, 0, u32::MAX].into_iter();
    for arch in foreign.filter(|a| *a != AUDIT_ARCH) {
        for nr in [0, 1, 39, 56, 435, 1100, X32_SYSCALL_BIT | 39, u32::MAX] {
            inputs.push(data(nr, arch, [0; 6]));
        }
    }
    let checked = [libc::SYS_clone, libc::SYS_clone3, libc::SYS_socket, libc::SYS_personality].map(|s| s as u32);
    for nr in checked.into_iter().flat_map(|nr| [nr, nr | X32_SYSCALL_BIT]) {
        for value in arg_values() {
            inputs.push(data(nr, AUDIT_ARCH, [value, 0, 0, 0, 0, 0]));
            inputs.push(data(nr, AUDIT_ARCH, [value, u64::MAX, 1, 2, 3, 4]));
            inputs.push(data(nr, AUDIT_ARCH, [0, value, value, 0, 0, 0]));
        }
    }
    inputs
}

#[test]
fn the_compiled_filter_gives_the_old_filters_verdicts() {
    let inputs = inputs();
    let mut differences = Vec::new();
    for caps in masks() {
        let (old, new) = (old_programs(caps), new_program(caps));
        old.iter().chain([&new]).for_each(|p| interp::check(p).unwrap());
        for input in &inputs {
            let (want, got) = (interp::stacked(&old, input).unwrap(), interp::run(&new, input).unwrap());
            if want != got {
                differences.push(format!("capabilities {caps:#x}, {input:x?}: {got:#x}, was {want:#x}"));
            }
        }
    }
    let shown = differences.iter().take(20).cloned().collect::<Vec<_>>().join("\n");
    assert!(differences.is_empty(), "{} verdicts differ:\n{shown}", differences.len());
    println!("{} inputs, {} capability masks: the same verdicts", inputs.len(), masks().len());
}

#[test]
fn the_compiled_program_is_a_fraction_of_the_old_ones() {
    for caps in [0, 1 << profile::CAP_SYS_ADMIN, u64::MAX] {
        let old: Vec<usize> = old_programs(caps).iter().map(Vec::len).collect();
        let new = new_program(caps).len();
        println!("capabilities {caps:#x}: {new} instructions, seccompiler's {old:?}");
        assert!(new * 5 < old.iter().sum(), "{new} against {old:?}");
        assert!(new < 200, "{new} instructions: the tree grew");
    }
}

#[test]
fn io_uring_is_not_allowed() {
    for call in [libc::SYS_io_uring_setup, libc::SYS_io_uring_enter, libc::SYS_io_uring_register] {
        assert!(!profile::ALLOWED.contains(&call) && !profile::ALLOWED_X86_64.contains(&call));
        assert!(profile::BY_CAPABILITY.iter().all(|(_, calls)| !calls.contains(&call)));
    }
}

/// What `policy` says of `data`, read from the policy itself.
fn judge(policy: &Policy, data: &Data) -> u32 {
    let verdict = if data.arch != policy.arch {
        Verdict::Act(policy.foreign)
    } else if data.nr >= policy.limit {
        Verdict::Act(policy.default)
    } else {
        policy.calls.get(&i64::from(data.nr)).cloned().unwrap_or(Verdict::Act(policy.default))
    };
    match verdict {
        Verdict::Act(action) => action.ret(),
        Verdict::Test(t) => {
            let width = match t.width {
                Width::Low32 => u64::from(u32::MAX),
                Width::Full64 => u64::MAX,
            };
            let hit = t.values.iter().any(|v| data.args[usize::from(t.arg)] & t.mask & width == v & t.mask & width);
            if hit { t.then } else { t.otherwise }.ret()
        }
    }
}

/// Every number 0..n its own range (neighbours differ), with tests of
/// both widths here and there; nothing it allows but exit and exit_group.
fn wide_policy(n: i64) -> Policy {
    let verdict = |nr: i64| match nr % 40 {
        7 => Verdict::Test(ArgTest {
            arg: 1,
            width: Width::Full64,
            mask: u64::MAX,
            values: vec![nr as u64, (nr as u64) << 32],
            then: Action::Errno(98),
            otherwise: Action::Errno(99),
        }),
        8 => Verdict::Test(ArgTest {
            arg: 2,
            width: Width::Low32,
            mask: 0xff,
            values: vec![1, 2, 3],
            then: Action::Errno(97),
            otherwise: Action::Errno(96),
        }),
        _ => Verdict::Act(Action::Errno(1 + (nr % 3) as u16)),
    };
    let mut calls: BTreeMap<i64, Verdict> = (0..n).map(|nr| (nr, verdict(nr))).collect();
    calls.insert(libc::SYS_exit, Verdict::Act(Action::Allow));
    calls.insert(libc::SYS_exit_group, Verdict::Act(Action::Allow));
    Policy { arch: AUDIT_ARCH, foreign: Action::KillProcess, limit: X32_SYSCALL_BIT, default: super::EPERM, calls }
}

#[test]
fn jumps_past_255_instructions_go_through_a_ja() {
    let policy = wide_policy(1300);
    let program = compile(&policy).unwrap();
    interp::check(&program).unwrap();
    let ja = (libc::BPF_JMP | libc::BPF_JA) as u16;
    let trampolines = program.iter().filter(|i| i.code == ja).count();
    println!("{} instructions, {trampolines} JA", program.len());
    assert!(trampolines > 0 && program.len() > 1024, "a tree this wide needs far jumps");
    for nr in (0..1400).chain([X32_SYSCALL_BIT, u32::MAX]) {
        for args in [[0; 6], [0, u64::from(nr), 2, 0, 0, 0], [0, u64::from(nr) << 32, 0x102, 0, 0, 0]] {
            let input = data(nr, AUDIT_ARCH, args);
            assert_eq!(interp::run(&program, &input), Ok(judge(&policy, &input)), "{input:?}");
        }
    }
    let small = compile(&wide_policy(100)).unwrap();
    assert!(small.iter().all(|i| i.code != ja), "no JA where every jump reaches");
}

#[test]
fn what_the_compiler_cannot_express_is_an_error() {
    let mut policy = wide_policy(10);
    policy.calls.insert(i64::from(X32_SYSCALL_BIT), Verdict::Act(Action::Allow));
    assert_eq!(compile(&policy), Err(CompileError::NumberOutOfRange { nr: 0x4000_0000, limit: X32_SYSCALL_BIT }));
    let mut policy = wide_policy(10);
    policy.calls.insert(-1, Verdict::Act(Action::Allow));
    assert!(matches!(compile(&policy), Err(CompileError::NumberOutOfRange { nr: -1, .. })));
    let mut policy = wide_policy(10);
    let test = ArgTest {
        arg: 6,
        width: Width::Low32,
        mask: u64::MAX,
        values: vec![1],
        then: Action::Allow,
        otherwise: super::EPERM,
    };
    policy.calls.insert(3, Verdict::Test(test.clone()));
    assert_eq!(compile(&policy), Err(CompileError::NoSuchArgument(6)));
    policy.calls.insert(3, Verdict::Test(ArgTest { arg: 0, values: (0..300).collect(), ..test }));
    assert_eq!(compile(&policy), Err(CompileError::TooManyValues(300)));
    assert!(matches!(compile(&wide_policy(2500)), Err(CompileError::TooLong(_))));
}

/// In a forked child: loads `program` (after no_new_privs, which lets a
/// process without CAP_SYS_ADMIN load one), makes each call with its
/// arguments, and exits 0 when each fails with the errno given (0: it
/// succeeds), or 1 + the index of the first that does not.
fn in_kernel(program: &[libc::sock_filter], calls: &[(i64, [u64; 6], i32)]) -> i32 {
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
    // SAFETY: the child makes only raw system calls and _exit (no
    // allocation, no lock), which is what a fork of a threaded process may do.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // SAFETY: prctl and seccomp with valid arguments (`prog` points at
            // `program`, alive in this copy of the memory), each call with six
            // integer arguments, then _exit.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(250);
                }
                if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) != 0 {
                    libc::_exit(251);
                }
                for (i, (nr, a, errno)) in calls.iter().enumerate() {
                    let rc = libc::syscall(*nr, a[0], a[1], a[2], a[3], a[4], a[5]);
                    let got = if rc == -1 { *libc::__errno_location() } else { 0 };
                    if got != *errno {
                        libc::_exit(1 + i.min(240) as i32);
                    }
                }
                libc::_exit(0)
            }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None).unwrap() {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("the child: {other:?}"),
        },
    }
}

#[test]
fn the_kernel_takes_a_program_with_far_jumps_and_agrees() {
    let policy = wide_policy(1300);
    let program = compile(&policy).unwrap();
    // x86-64's uretprobe (335) and uprobe (336) calls bypass every
    // filter (seen on Linux 6.18: called from anywhere, the first raises
    // SIGILL, the second fails on its own), so they do not tell.
    let unfiltered: &[i64] = if cfg!(target_arch = "x86_64") { &[335, 336] } else { &[] };
    let calls: Vec<(i64, [u64; 6], i32)> = (0..1300)
        .chain([1500, i64::from(X32_SYSCALL_BIT) + 39])
        .filter(|nr| ![libc::SYS_exit, libc::SYS_exit_group].contains(nr) && !unfiltered.contains(nr))
        .map(|nr| {
            let args = [0, nr as u64, 2, 0, 0, 0];
            let errno = judge(&policy, &data(nr as u32, AUDIT_ARCH, args)) & libc::SECCOMP_RET_DATA;
            (nr, args, errno as i32)
        })
        .collect();
    assert_eq!(in_kernel(&program, &calls), 0, "calls: {calls:?}");
}

#[test]
fn the_kernel_applies_the_default_program() {
    let vsock = 40;
    let mut calls = vec![
        (libc::SYS_getpid, [0; 6], 0),
        (libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0], 0),
        (libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0], libc::EPERM),
        (libc::SYS_socket, [vsock, libc::SOCK_STREAM as u64, 0, 0, 0, 0], libc::EPERM),
        (libc::SYS_clone3, [0; 6], libc::ENOSYS),
        (libc::SYS_clone, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0], libc::EPERM),
        (libc::SYS_unshare, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0], libc::EPERM),
        (libc::SYS_io_uring_setup, [0; 6], libc::EPERM),
        (libc::SYS_bpf, [0; 6], libc::EPERM),
    ];
    if cfg!(target_arch = "x86_64") {
        calls.push((i64::from(X32_SYSCALL_BIT) | libc::SYS_getpid, [0; 6], libc::EPERM));
    }
    assert_eq!(in_kernel(&new_program(0), &calls), 0, "calls: {calls:?}");
}
