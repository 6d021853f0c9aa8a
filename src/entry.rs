//! The executable's first instructions, in the release build (static musl
//! on x86_64): a module of the binary (src/main.rs), not of the library,
//! made the ELF entry by build.rs.
//!
//! The release binary is a static PIE: before anything else runs, musl's
//! start code relocates it, writing a pointer into every page of its
//! relocated data (PT_GNU_RELRO, 105 pages), and each first write is a page
//! fault. On a VM a fault's trap costs more than the page's copy (about
//! 1.9 us a page faulted one by one, against 0.4 to 0.7 us asked for in
//! one call: bench/PROFILE.md). `paddock_start` asks the kernel for all of
//! those pages at once (`madvise(MADV_POPULATE_WRITE)`), then for the 64
//! KiB of stack below the arguments, then jumps to musl's `_start` as the
//! kernel would have: the same stack pointer, %rdx zero. Errors are
//! ignored: before Linux 5.14 the kernel answers EINVAL and each page
//! faults in as before. Nothing is relocated yet, so the code reads only
//! the ELF header the kernel mapped (`__ehdr_start`, addressed relative to
//! the instruction pointer) and no data.

#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
core::arch::global_asm!(
    ".globl paddock_start",
    ".type paddock_start, @function",
    "paddock_start:",
    // %r8: the ELF header, also the load address of a PIE (ET_DYN: its
    // addresses start at 0); an executable at a fixed address has nothing
    // relocated. %r9: the program headers, %r10 bytes each, %ecx of them.
    "lea __ehdr_start(%rip), %r8",
    "cmpw $3, 0x10(%r8)",
    "jne 3f",
    "mov 0x20(%r8), %r9",
    "add %r8, %r9",
    "movzwl 0x36(%r8), %r10d",
    "movzwl 0x38(%r8), %ecx",
    "1:",
    "test %ecx, %ecx",
    "jz 3f",
    // PT_GNU_RELRO
    "cmpl $0x6474e552, (%r9)",
    "je 2f",
    "add %r10, %r9",
    "dec %ecx",
    "jmp 1b",
    // Its pages: p_vaddr (+ the load address) to p_vaddr + p_memsz,
    // widened to whole pages.
    "2:",
    "mov 0x10(%r9), %rdi",
    "add %r8, %rdi",
    "mov 0x28(%r9), %rsi",
    "mov %rdi, %rax",
    "and $0xfff, %rax",
    "sub %rax, %rdi",
    "add %rax, %rsi",
    "add $0xfff, %rsi",
    "and $-0x1000, %rsi",
    "mov ${populate_write}, %edx",
    "mov ${madvise}, %eax",
    "syscall",
    // The stack's 64 KiB below the arguments (within the 128 KiB the
    // kernel maps there).
    "3:",
    "mov %rsp, %rdi",
    "and $-0x1000, %rdi",
    "sub $0x10000, %rdi",
    "mov $0x10000, %esi",
    "mov ${populate_write}, %edx",
    "mov ${madvise}, %eax",
    "syscall",
    "xor %edx, %edx",
    "jmp _start",
    populate_write = const libc::MADV_POPULATE_WRITE,
    madvise = const libc::SYS_madvise,
    options(att_syntax)
);
