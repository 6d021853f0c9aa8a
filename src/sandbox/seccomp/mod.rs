//! The default seccomp filter: Docker's default profile, as an allowlist.
//! Every system call Docker allows a container is allowed, with its
//! argument conditions (no namespace flags to clone, no AF_VSOCK socket,
//! personality only with the values Docker lets through); those Docker
//! allows only with a capability are allowed when the workload keeps that
//! capability; clone3 fails with ENOSYS unless CAP_SYS_ADMIN is kept;
//! everything else, new system calls and io_uring included, fails with
//! EPERM, and so do the x32 ABI's system-call numbers (bit 30 set on
//! x86-64); a call from another architecture (`int 0x80`) kills the
//! process. Built in the init (a single-threaded process), loaded by the workload's process just before it drops its
//! capabilities.
//!
//! The filter is compiled here (`bpf`) into one program searched as a
//! balanced tree: 150 instructions for a workload without capabilities.
//! seccompiler built it as a linear chain of 1,510, plus a second program
//! of 10 for clone3. Loading those (the kernel checks, converts and JITs
//! every instruction, then emulates it for every number to cache the
//! ones it always allows) took about 1 ms of each sandbox's start (1.1 ms
//! with `perf trace`; 0.96 to 1.0 ms median in `cargo bench --bench
//! seccomp`), on the path of `paddock run` and of every restart; the
//! compiled program loads in 0.075 to 0.087 ms. And a call the kernel
//! cannot answer from that cache (one refused, or with an argument test)
//! walked the chain up to its number: a refused io_uring_setup cost 610
//! to 690 ns, now 134 to 148.
//!
//! seccompiler remains as the test oracle (`oracle`): the compiled program
//! must give the verdict its programs gave, for every number, architecture
//! and argument the tests try.

mod bpf;
mod profile;

use std::collections::BTreeMap;

use bpf::{Action, ArgTest, Policy, Verdict, Width};
use profile::{AF_VSOCK, ALLOWED, ALLOWED_X86_64, BY_CAPABILITY, CAP_SYS_ADMIN, NAMESPACE_FLAGS, PERSONALITIES};

pub use bpf::BpfProgram;

/// The filter could not be compiled: the tables hold a number or a test
/// the compiler cannot express.
pub type SeccompError = bpf::CompileError;

/// AUDIT_ARCH_X86_64 (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
/// AUDIT_ARCH_AARCH64 (EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// __X32_SYSCALL_BIT: x86-64's x32 ABI numbers its calls from here, with
/// the same AUDIT_ARCH. No native number of either architecture is this
/// high, so every number from here up gets the default, as an allowlist
/// that names none of them did.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const EPERM: Action = Action::Errno(libc::EPERM as u16);

/// The programs to load, in order, for a workload that keeps the
/// capabilities in `capabilities` (a bit mask by number): one program.
pub fn default_programs(capabilities: u64) -> Result<Vec<BpfProgram>, SeccompError> {
    Ok(vec![bpf::compile(&policy(capabilities))?])
}

fn policy(capabilities: u64) -> Policy {
    let has = |cap: u32| capabilities & (1 << cap) != 0;
    let allow = Verdict::Act(Action::Allow);
    let mut calls: BTreeMap<i64, Verdict> = ALLOWED.iter().chain(ALLOWED_X86_64).map(|s| (*s, allow.clone())).collect();
    for (cap, allowed) in BY_CAPABILITY {
        if has(*cap) {
            calls.extend(allowed.iter().map(|s| (*s, allow.clone())));
        }
    }
    if !has(CAP_SYS_ADMIN) {
        let no_namespaces = ArgTest {
            arg: 0,
            width: Width::Full64,
            mask: NAMESPACE_FLAGS,
            values: vec![0],
            then: Action::Allow,
            otherwise: EPERM,
        };
        calls.insert(libc::SYS_clone, Verdict::Test(no_namespaces));
        // clone3's flags live in memory a filter cannot read: ENOSYS makes
        // libc fall back to clone, whose flags are checked (Docker does the
        // same). Where paddock stacked a second program for this, the
        // kernel kept its ERRNO over the allowlist's ALLOW, the stricter.
        calls.insert(libc::SYS_clone3, Verdict::Act(Action::Errno(libc::ENOSYS as u16)));
    }
    let not_vsock = ArgTest {
        arg: 0,
        width: Width::Low32,
        mask: u64::MAX,
        values: vec![AF_VSOCK],
        then: EPERM,
        otherwise: Action::Allow,
    };
    calls.insert(libc::SYS_socket, Verdict::Test(not_vsock));
    let personality = ArgTest {
        arg: 0,
        width: Width::Low32,
        mask: u64::MAX,
        values: PERSONALITIES.to_vec(),
        then: Action::Allow,
        otherwise: EPERM,
    };
    calls.insert(libc::SYS_personality, Verdict::Test(personality));
    Policy { arch: AUDIT_ARCH, foreign: Action::KillProcess, limit: X32_SYSCALL_BIT, default: EPERM, calls }
}

#[cfg(test)]
mod interp;
#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
