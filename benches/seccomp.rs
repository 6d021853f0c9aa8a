//! The default seccomp filter (a workload without capabilities), before
//! and after paddock compiled it: seccompiler's two programs (the test
//! oracle, src/sandbox/seccomp/oracle.rs) against the one compiled
//! program. Two measures, each in fresh forked children that set
//! no_new_privs (no privilege needed):
//! - load: the time of the seccomp(SECCOMP_SET_MODE_FILTER) calls, what a
//!   sandbox's start pays (200 children each, interleaved, medians);
//! - per call: a loop of 1,000,000 system calls under each filter, and
//!   under none: getppid, which the kernel's per-number cache of
//!   always-allowed calls lets skip the filter, and personality(0xffffffff)
//!   (allowed after an argument test) and io_uring_setup (refused), which
//!   run it.
//!
//! Run: cargo bench --bench seccomp

use std::time::Duration;

use paddock::sandbox::seccomp::default_programs;

// The oracle is test code, built on seccompiler (a dev-dependency).
#[allow(dead_code)]
#[path = "../src/sandbox/seccomp/oracle.rs"]
mod oracle;

const CHILDREN: usize = 200;
const CALLS: u64 = 1_000_000;
const CALL_RUNS: usize = 11;

type Program = Vec<libc::sock_filter>;

fn now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given (a vDSO call, no system call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `measure` in a forked child after no_new_privs; returns the
/// nanoseconds it reports through a pipe.
fn in_child(measure: impl Fn() -> u64) -> u64 {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: this process is single-threaded; the child only makes system
    // calls (and reads the vDSO clock) before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: prctl with integer arguments; write of 8 bytes from a
        // local; _exit ends the child without running the parent's cleanup.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(2);
            }
            let ns = measure().to_ne_bytes();
            let ok = libc::write(fds[1], ns.as_ptr().cast(), ns.len()) == 8;
            libc::_exit(if ok { 0 } else { 3 });
        }
    }
    let mut ns = [0u8; 8];
    // SAFETY: read into a local buffer of 8 bytes; close our two descriptors.
    let read = unsafe { libc::read(fds[0], ns.as_mut_ptr().cast(), ns.len()) };
    let mut status = 0;
    // SAFETY: waits for our own child, writing its status into a local.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
        libc::waitpid(pid, &mut status, 0);
    }
    assert!(read == 8 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child: {status:#x}");
    u64::from_ne_bytes(ns)
}

/// Loads `programs` in order; Err(errno) if the kernel refuses one.
fn load(programs: &[Program]) -> Result<(), i32> {
    for program in programs {
        let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
        // SAFETY: `prog` points at `program`, alive for the call; the kernel copies it.
        if unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
    }
    Ok(())
}

fn load_time(programs: &[Program]) -> u64 {
    in_child(|| {
        let start = now();
        if load(programs).is_err() {
            return u64::MAX;
        }
        (now() - start).as_nanos() as u64
    })
}

/// Nanoseconds per call of `nr(args)`, `CALLS` times, under `programs`.
fn call_time(programs: &[Program], nr: i64, args: [u64; 2]) -> u64 {
    in_child(|| {
        if load(programs).is_err() {
            return u64::MAX;
        }
        let start = now();
        for _ in 0..CALLS {
            // SAFETY: getppid, personality's query and io_uring_setup(0, NULL)
            // (refused by the filters, EINVAL without one) change nothing.
            unsafe { libc::syscall(nr, args[0], args[1]) };
        }
        (now() - start).as_nanos() as u64 / CALLS
    })
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    let old: Vec<Program> = oracle::programs(0)
        .iter()
        .map(|p| p.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect())
        .collect();
    let new: Vec<Program> = default_programs(0).expect("the default filter compiles");
    let lengths = |ps: &[Program]| ps.iter().map(Vec::len).collect::<Vec<_>>();
    println!("instructions: seccompiler {:?}, compiled {:?}", lengths(&old), lengths(&new));
    assert!(load_time(&old) != u64::MAX && load_time(&new) != u64::MAX, "the kernel takes both");

    let (mut before, mut after) = (Vec::new(), Vec::new());
    for _ in 0..CHILDREN {
        before.push(load_time(&old));
        after.push(load_time(&new));
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let spread = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        (us(v[v.len() / 10]), us(v[v.len() * 9 / 10]))
    };
    let (b10, b90) = spread(&before);
    let (a10, a90) = spread(&after);
    println!("load, {CHILDREN} children each (median, p10-p90):");
    println!("  seccompiler, 2 programs: {:8.1} us  ({b10:.1}-{b90:.1})", us(median(before)));
    println!("  compiled, 1 program:     {:8.1} us  ({a10:.1}-{a90:.1})", us(median(after)));

    let calls: [(&str, i64, [u64; 2]); 3] = [
        ("getppid", libc::SYS_getppid, [0, 0]),
        ("personality(0xffffffff)", libc::SYS_personality, [0xffff_ffff, 0]),
        ("io_uring_setup(0, NULL)", libc::SYS_io_uring_setup, [0, 0]),
    ];
    println!("per call, {CALLS} calls, median of {CALL_RUNS} children each, interleaved (ns):");
    println!("  {:<26} {:>9} {:>12} {:>9}", "", "no filter", "seccompiler", "compiled");
    for (name, nr, args) in calls {
        let variants: [&[Program]; 3] = [&[], &old, &new];
        let mut times = [(); 3].map(|_| Vec::new());
        for _ in 0..CALL_RUNS {
            for (programs, times) in variants.iter().zip(&mut times) {
                times.push(call_time(programs, nr, args));
            }
        }
        let [none, before, after] = times.map(median);
        println!("  {name:<26} {none:>9} {before:>12} {after:>9}");
    }
}
