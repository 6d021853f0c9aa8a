/* Probes the sandbox's system-call filter from inside: each line is
 * "NAME RESULT", RESULT being "ok" or the errno's name. Built static by
 * tests/sandbox_seccomp.rs, so it runs in a busybox root. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define X32_BIT 0x40000000L

static void report(const char *name, long rc) {
    const char *e = rc >= 0 ? "ok" : errno == EPERM ? "EPERM" : errno == ENOSYS ? "ENOSYS"
                  : errno == EINVAL ? "EINVAL" : errno == EFAULT ? "EFAULT" : errno == EBADF ? "EBADF"
                  : "other";
    printf("%s %s\n", name, e);
}

int main(void) {
    char params[120];
    memset(params, 0, sizeof params);
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, params));
    report("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0));
    report("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0));
    report("socket_vsock", syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0));
    report("socket_inet", syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    report("personality_query", syscall(SYS_personality, 0xffffffffUL));
    report("personality_linux", syscall(SYS_personality, 0UL));
    report("personality_no_randomize", syscall(SYS_personality, (unsigned long)ADDR_NO_RANDOMIZE));
    report("personality_read_implies_exec", syscall(SYS_personality, (unsigned long)READ_IMPLIES_EXEC));
    report("mbind", syscall(SYS_mbind, 0, 0, 0, 0, 0, 0));
    report("move_pages", syscall(SYS_move_pages, 0, 0, 0, 0, 0, 0));
    report("set_mempolicy", syscall(SYS_set_mempolicy, 0, 0, 0));
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING: whose session keyring it has. */
    long ring = syscall(SYS_keyctl, 0, -3, 0);
    if (ring >= 0) printf("session_keyring %ld\n", ring); else report("session_keyring", ring);
    report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    report("getpid", syscall(SYS_getpid));
    /* The sandbox's init's resource limits: the kernel lets a process with
       the same ids as another set (and read) that one's, dumpable or not. */
    struct rlimit limit;
    report("prlimit_init", syscall(SYS_prlimit64, 1, RLIMIT_FSIZE, NULL, &limit));
    /* NS_GET_OWNER_UID of its own user namespace: 0 if its root owns it,
       the overflow uid if the host's root does. */
    unsigned owner = 0;
    int ns = open("/proc/self/ns/user", O_RDONLY);
    if (ns >= 0 && ioctl(ns, 0xb704, &owner) == 0) printf("userns_owner %u\n", owner); else report("userns_owner", -1);
#ifdef __x86_64__
    /* The x32 ABI's numbers: the filter must refuse them whatever the kernel. */
    report("x32_getpid", syscall(X32_BIT | SYS_getpid));
    report("x32_mount", syscall(X32_BIT | SYS_mount, 0, 0, 0, 0, 0));
    report("x32_unshare", syscall(X32_BIT | SYS_unshare, CLONE_NEWUSER));
#endif
    return 0;
}
