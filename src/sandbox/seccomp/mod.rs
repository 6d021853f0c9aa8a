//! The default seccomp filter: Docker's default profile, as an allowlist.
//! Every system call Docker allows a container is allowed, with its
//! argument conditions (no namespace flags to clone, no AF_VSOCK socket,
//! personality only with the values Docker lets through); those Docker
//! allows only with a capability are allowed when the workload keeps that
//! capability; everything else, new system calls and io_uring included,
//! fails with EPERM. Being an allowlist, it also refuses the x32 ABI's
//! system-call numbers (bit 30 set on x86-64), which no entry matches,
//! and seccompiler kills a call from another architecture (`int 0x80`).
//! Built in the init (a single-threaded, freshly exec'd process), loaded
//! by the workload's process just before it drops its capabilities.

mod profile;

use std::collections::BTreeMap;

use profile::{AF_VSOCK, ALLOWED, ALLOWED_X86_64, BY_CAPABILITY, CAP_SYS_ADMIN, NAMESPACE_FLAGS, PERSONALITIES};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter: {0}")]
pub struct SeccompError(String);

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

fn condition(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| SeccompError(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(|e| SeccompError(e.to_string()))
}

/// The programs to load, in order, for a workload that keeps the
/// capabilities in `capabilities` (a bit mask by number): the allowlist,
/// then clone3 -> ENOSYS unless CAP_SYS_ADMIN is kept (clone3's flags live
/// in memory a filter cannot read, so libc must fall back to clone, whose
/// flags the allowlist checks; Docker does the same).
pub fn default_programs(capabilities: u64) -> Result<Vec<BpfProgram>, SeccompError> {
    let err = |e: seccompiler::BackendError| SeccompError(e.to_string());
    let has = |cap: u32| capabilities & (1 << cap) != 0;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().chain(ALLOWED_X86_64).map(|s| (*s, Vec::new())).collect();
    for (cap, calls) in BY_CAPABILITY {
        if has(*cap) {
            rules.extend(calls.iter().map(|s| (*s, Vec::new())));
        }
    }
    if !has(CAP_SYS_ADMIN) {
        let no_namespaces = condition(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0)?;
        rules.insert(libc::SYS_clone, vec![rule(vec![no_namespaces])?]);
        // Allowed here, answered ENOSYS by the second program.
        rules.insert(libc::SYS_clone3, Vec::new());
    }
    let not_vsock = condition(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, AF_VSOCK)?;
    rules.insert(libc::SYS_socket, vec![rule(vec![not_vsock])?]);
    let personalities = PERSONALITIES
        .iter()
        .map(|p| rule(vec![condition(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *p)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, personalities);
    let allow =
        SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, ARCH).map_err(err)?;
    let mut filters = vec![allow];
    if !has(CAP_SYS_ADMIN) {
        filters.push(
            SeccompFilter::new(
                BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
                ARCH,
            )
            .map_err(err)?,
        );
    }
    filters.into_iter().map(|f| BpfProgram::try_from(f).map_err(|e| SeccompError(e.to_string()))).collect()
}

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle's frozen copy of the tables and of this builder gives
    /// today's programs, instruction for instruction.
    #[test]
    fn the_oracle_is_todays_filter() {
        let masks = [0, 1 << CAP_SYS_ADMIN, u64::MAX]
            .into_iter()
            .chain(oracle::capabilities_used().into_iter().map(|c| 1 << c));
        for caps in masks {
            assert_eq!(default_programs(caps).unwrap(), oracle::programs(caps), "capabilities {caps:#x}");
        }
    }

    #[test]
    fn the_default_programs_build() {
        let programs = default_programs(0).unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
        assert_eq!(default_programs(1 << CAP_SYS_ADMIN).unwrap().len(), 1, "no ENOSYS for clone3 with SYS_ADMIN");
    }

    #[test]
    fn io_uring_is_not_allowed() {
        for call in [libc::SYS_io_uring_setup, libc::SYS_io_uring_enter, libc::SYS_io_uring_register] {
            assert!(!ALLOWED.contains(&call));
            assert!(BY_CAPABILITY.iter().all(|(_, calls)| !calls.contains(&call)));
        }
    }
}
