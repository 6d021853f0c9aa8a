//! A small compiler from a seccomp policy to one classic-BPF program,
//! laid out the way libseccomp's optimizer lays out a filter
//! (SCMP_FLTATR_CTL_OPTIMIZE=2): the architecture checked first, then the
//! system-call number searched by a balanced tree of `JGE` comparisons
//! over ranges of consecutive numbers that get the same verdict, each leaf
//! a `RET` or a short test of one argument. A call walks about
//! log2(ranges) comparisons, where seccompiler's linear chain tests every
//! allowed number below it, and the program is a fraction of the length
//! the kernel must check, convert and JIT at every load.
//!
//! The policy's shape is all paddock's filter needs: an action per
//! number, or a test of one argument against a few values (masked, on its
//! low 32 bits or on both halves).

use std::collections::BTreeMap;

/// A program: instructions in the kernel's layout (linux/filter.h).
pub type BpfProgram = Vec<libc::sock_filter>;

/// The kernel's limit on a program's length (BPF_MAXINSNS).
const MAX_LEN: usize = 4096;

// The opcodes the compiler emits (linux/bpf_common.h); each fits in the
// 16 bits of `code`.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// Offsets in struct seccomp_data { int nr; __u32 arch; __u64
// instruction_pointer; __u64 args[6]; }. A filter loads 32-bit words, so
// a 64-bit argument is two loads, whose order in memory is the host's.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;
#[cfg(target_endian = "little")]
const LOW_HALF: u32 = 0;
#[cfg(target_endian = "little")]
const HIGH_HALF: u32 = 4;
#[cfg(target_endian = "big")]
const LOW_HALF: u32 = 4;
#[cfg(target_endian = "big")]
const HIGH_HALF: u32 = 0;

/// What the filter answers a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// The call fails with this errno, without running.
    Errno(u16),
    /// The whole process is killed.
    KillProcess,
}

impl Action {
    /// The value a `RET` of this action returns (linux/seccomp.h).
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
}

/// How much of a 64-bit argument a test compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// Its low 32 bits only: an `int` argument, whose upper half the
    /// kernel ignores (seccompiler's `Dword`).
    Low32,
    /// Both halves, each compared in turn (seccompiler's `Qword`).
    Full64,
}

/// A test of one argument: `then` when `arg & mask` is `value & mask` for
/// one of `values` (over `width`), `otherwise` when it is none of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgTest {
    /// 0 to 5.
    pub arg: u8,
    pub width: Width,
    /// `u64::MAX` for no mask.
    pub mask: u64,
    pub values: Vec<u64>,
    pub then: Action,
    pub otherwise: Action,
}

/// The verdict for one system-call number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Act(Action),
    Test(ArgTest),
}

/// A whole filter.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The AUDIT_ARCH_* value of the calls the filter judges.
    pub arch: u32,
    /// For a call made with another architecture's convention.
    pub foreign: Action,
    /// Numbers from this one up get `default` before the search (x86-64's
    /// x32 calls set bit 30); every number in `calls` is below it.
    pub limit: u32,
    /// For a number `calls` does not name.
    pub default: Action,
    pub calls: BTreeMap<i64, Verdict>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("building the seccomp filter: system call {nr} is outside 0..{limit:#x}")]
    NumberOutOfRange { nr: i64, limit: u32 },
    #[error("building the seccomp filter: a test of argument {0}, where system calls have 0 to 5")]
    NoSuchArgument(u8),
    #[error("building the seccomp filter: a test of {0} values, too many for a conditional jump's reach")]
    TooManyValues(usize),
    #[error("building the seccomp filter: {0} instructions, where the kernel takes at most 4096")]
    TooLong(usize),
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret(action: Action) -> libc::sock_filter {
    stmt(RET_K, action.ret())
}

/// The program for `policy`: at most 4096 instructions, every jump
/// forward and inside it, the last instruction a `RET`.
pub fn compile(policy: &Policy) -> Result<BpfProgram, CompileError> {
    let mut program = vec![
        // The architecture first: a number means nothing under another
        // architecture's table (seccompiler's prologue, same action).
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, policy.arch, 1, 0),
        ret(policy.foreign),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, policy.limit, 0, 1),
        ret(policy.default),
    ];
    program.extend(tree(&ranges(policy)?, policy.default)?);
    if program.len() > MAX_LEN {
        return Err(CompileError::TooLong(program.len()));
    }
    Ok(program)
}

/// The numbers 0..limit as ranges, each given by its first number, in
/// order; neighbours have different verdicts.
fn ranges(policy: &Policy) -> Result<Vec<(u32, Verdict)>, CompileError> {
    fn push(ranges: &mut Vec<(u32, Verdict)>, first: u32, verdict: Verdict) {
        if ranges.last().is_none_or(|(_, last)| *last != verdict) {
            ranges.push((first, verdict));
        }
    }
    let default = Verdict::Act(policy.default);
    let mut ranges = Vec::new();
    let mut next = 0;
    for (&nr, verdict) in &policy.calls {
        let number = u32::try_from(nr)
            .ok()
            .filter(|n| *n < policy.limit)
            .ok_or(CompileError::NumberOutOfRange { nr, limit: policy.limit })?;
        if number > next {
            push(&mut ranges, next, default.clone());
        }
        push(&mut ranges, number, verdict.clone());
        // Below `limit`, so no overflow.
        next = number.saturating_add(1);
    }
    if next < policy.limit {
        push(&mut ranges, next, default);
    }
    Ok(ranges)
}

/// A balanced search of `ranges`: each node sends numbers from its
/// right half's first up to the right, the rest to the left, which
/// follows it. A conditional jump reaches 255 instructions: past a left
/// half that long, the node jumps over one `JA` (whose reach is 32 bits)
/// into the left, or onto it to go right.
fn tree(ranges: &[(u32, Verdict)], default: Action) -> Result<Vec<libc::sock_filter>, CompileError> {
    let (left, right) = ranges.split_at(ranges.len() / 2);
    match (left, right) {
        // No ranges at all: only when `limit` is 0, and then never reached.
        (_, []) => Ok(vec![ret(default)]),
        ([], [(_, verdict), ..]) => leaf(verdict),
        (_, [(pivot, _), ..]) => {
            let (left, right) = (tree(left, default)?, tree(right, default)?);
            let mut node = Vec::with_capacity(left.len() + right.len() + 2);
            match u8::try_from(left.len()) {
                Ok(skip) => node.push(jump(JGE_K, *pivot, skip, 0)),
                Err(_) => {
                    let skip = u32::try_from(left.len()).map_err(|_| CompileError::TooLong(left.len()))?;
                    node.extend([jump(JGE_K, *pivot, 0, 1), stmt(JA, skip)]);
                }
            }
            node.extend(left);
            node.extend(right);
            Ok(node)
        }
    }
}

fn leaf(verdict: &Verdict) -> Result<Vec<libc::sock_filter>, CompileError> {
    match verdict {
        Verdict::Act(action) => Ok(vec![ret(*action)]),
        Verdict::Test(test) => arg_test(test),
    }
}

/// Loads one half of an argument into A, masked unless the mask keeps
/// every bit.
fn load(offset: u32, mask: u32) -> Vec<libc::sock_filter> {
    let mut code = vec![stmt(LD_W_ABS, offset)];
    if mask != u32::MAX {
        code.push(stmt(AND_K, mask));
    }
    code
}

/// One compare per value (two for `Full64`, high half first), a match
/// jumping to `RET then` at the end, no match falling through to the next
/// value and at last to `RET otherwise`, as seccompiler's rules do.
fn arg_test(test: &ArgTest) -> Result<Vec<libc::sock_filter>, CompileError> {
    if test.arg > 5 {
        return Err(CompileError::NoSuchArgument(test.arg));
    }
    let base = ARGS + 8 * u32::from(test.arg);
    let (mask_high, mask_low) = ((test.mask >> 32) as u32, test.mask as u32);
    let (load_high, load_low) = (load(base + HIGH_HALF, mask_high), load(base + LOW_HALF, mask_low));
    let far = || CompileError::TooManyValues(test.values.len());
    let mut code = Vec::new();
    match test.width {
        Width::Low32 => {
            // A keeps the loaded half across the compares.
            code.extend(load_low);
            for (i, value) in test.values.iter().enumerate() {
                let to_then = u8::try_from(test.values.len() - i).map_err(|_| far())?;
                code.push(jump(JEQ_K, *value as u32 & mask_low, to_then, 0));
            }
        }
        Width::Full64 => {
            let block = load_high.len() + load_low.len() + 2;
            let next_value = u8::try_from(load_low.len() + 1).map_err(|_| far())?;
            for (i, value) in test.values.iter().enumerate() {
                let to_then = u8::try_from((test.values.len() - 1 - i) * block + 1).map_err(|_| far())?;
                code.extend(load_high.iter().copied());
                code.push(jump(JEQ_K, (value >> 32) as u32 & mask_high, 0, next_value));
                code.extend(load_low.iter().copied());
                code.push(jump(JEQ_K, *value as u32 & mask_low, to_then, 0));
            }
        }
    }
    code.extend([ret(test.otherwise), ret(test.then)]);
    Ok(code)
}
