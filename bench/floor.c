/* The floor for bench/sandbox.sh: the least work that gives the same
 * isolation as the tools it is compared with. clone into new user, mount,
 * pid, uts, ipc (and, with -n, network) namespaces; the parent writes the id
 * maps directly; the child binds the rootfs, pivots into it and execs.
 * No /proc, no /dev, no cgroup, no seccomp: nothing can start faster.
 * Usage: floor [-n] ROOTFS CMD...   (root only) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char stack[1 << 16];
static int sync_pipe[2];
static char **cmd;
static const char *rootfs;

static void die(const char *what) { perror(what); _exit(125); }

static int child(void *arg) {
    (void)arg;
    char c;
    close(sync_pipe[1]);
    if (read(sync_pipe[0], &c, 1) != 1) die("sync");
    if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) die("setresuid");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("private");
    if (mount(rootfs, rootfs, NULL, MS_BIND, NULL)) die("bind");
    if (chdir(rootfs)) die("chdir");
    if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
    if (umount2(".", MNT_DETACH)) die("umount");
    execv(cmd[0], cmd);
    die("exec");
    return 0;
}

static void write_file(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s)) die(path);
    close(fd);
}

int main(int argc, char **argv) {
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "-n") == 0) { flags |= CLONE_NEWNET; i++; }
    if (argc - i < 2) { fprintf(stderr, "usage: floor [-n] ROOTFS CMD...\n"); return 2; }
    rootfs = argv[i];
    cmd = &argv[i + 1];
    if (pipe(sync_pipe)) die("pipe");
    pid_t pid = clone(child, stack + sizeof stack, flags, NULL);
    if (pid < 0) die("clone");
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    write_file(path, "0 100000 65536\n");
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    write_file(path, "0 100000 65536\n");
    close(sync_pipe[0]);
    if (write(sync_pipe[1], "x", 1) != 1) die("release");
    int status;
    if (waitpid(pid, &status, 0) < 0) die("waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
