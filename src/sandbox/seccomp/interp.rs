//! A classic-BPF interpreter for the subset seccomp programs use, written
//! from linux/filter.h and kernel/seccomp.c for the tests: it runs
//! the compiled program and the oracle's, and combines stacked programs'
//! verdicts as the kernel does. Any other instruction, a load outside
//! `struct seccomp_data`, or a jump out of the program is an error.

/// `struct seccomp_data`, as a filter sees it.
#[derive(Clone, Copy, Debug)]
pub struct Data {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Data {
    /// The struct's memory, in the host's byte order (so a 64-bit
    /// argument's halves are where the kernel's are).
    fn bytes(&self) -> [u8; 64] {
        let mut bytes = [0; 64];
        bytes[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        // 8..16: instruction_pointer, left 0.
        for (i, arg) in self.args.iter().enumerate() {
            bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        bytes
    }
}

/// The 32-bit word at `offset` in `bytes`.
fn word(bytes: &[u8; 64], offset: u32) -> Result<u32, String> {
    let at = offset as usize;
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) if at % 4 == 0 => Ok(u32::from_ne_bytes([a, b, c, d])),
        _ => Err(format!("load at offset {offset}, outside seccomp_data or unaligned")),
    }
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The value `program` returns for `data`.
pub fn run(program: &[libc::sock_filter], data: &Data) -> Result<u32, String> {
    let bytes = data.bytes();
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let insn = program.get(pc).ok_or_else(|| format!("ran past the end at {pc}"))?;
        let branch = |taken: bool| pc + 1 + usize::from(if taken { insn.jt } else { insn.jf });
        pc = match insn.code {
            LD_W_ABS => {
                a = word(&bytes, insn.k)?;
                pc + 1
            }
            AND_K => {
                a &= insn.k;
                pc + 1
            }
            JA => pc + 1 + insn.k as usize,
            JEQ_K => branch(a == insn.k),
            JGT_K => branch(a > insn.k),
            JGE_K => branch(a >= insn.k),
            JSET_K => branch(a & insn.k != 0),
            RET_K => return Ok(insn.k),
            code => return Err(format!("instruction {pc}: opcode {code:#x} is not in the seccomp subset")),
        };
    }
}

/// The verdict of `programs` loaded in this order (kernel/seccomp.c,
/// seccomp_run_filters): each runs, newest first, and the one whose action
/// comes first in precedence (KILL_PROCESS, KILL_THREAD, TRAP, ERRNO,
/// USER_NOTIF, TRACE, LOG, ALLOW: the action bits read as a signed
/// number, lowest first) wins; on a tie, the newest.
pub fn stacked(programs: &[Vec<libc::sock_filter>], data: &Data) -> Result<u32, String> {
    let action = |ret: u32| (ret & libc::SECCOMP_RET_ACTION_FULL) as i32;
    let mut verdict = libc::SECCOMP_RET_ALLOW;
    for program in programs.iter().rev() {
        let ret = run(program, data)?;
        if action(ret) < action(verdict) {
            verdict = ret;
        }
    }
    Ok(verdict)
}

/// What the kernel checks before it takes a program, and more: a length
/// of 1 to 4096, only the subset's instructions, every jump landing inside
/// the program, a `RET` last.
pub fn check(program: &[libc::sock_filter]) -> Result<(), String> {
    if program.is_empty() || program.len() > 4096 {
        return Err(format!("{} instructions", program.len()));
    }
    for (pc, insn) in program.iter().enumerate() {
        let targets = match insn.code {
            LD_W_ABS | AND_K | RET_K => vec![],
            JA => vec![pc + 1 + insn.k as usize],
            JEQ_K | JGT_K | JGE_K | JSET_K => vec![pc + 1 + usize::from(insn.jt), pc + 1 + usize::from(insn.jf)],
            code => return Err(format!("instruction {pc}: opcode {code:#x}")),
        };
        if let Some(far) = targets.into_iter().find(|t| *t >= program.len()) {
            return Err(format!("instruction {pc} jumps to {far}, past the end ({})", program.len()));
        }
    }
    match program.last() {
        Some(insn) if insn.code == RET_K => Ok(()),
        _ => Err("the last instruction is not a RET".into()),
    }
}
