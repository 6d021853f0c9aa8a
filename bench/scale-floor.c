/* The floor for bench/daemon.py's scale measure: COUNT sandboxes started
 * as fast as a bare loop can, with no supervisor. Each is cloned into new
 * user, mount, pid, uts, ipc and network namespaces; the parent writes its
 * id maps (a slice of 65536 ids of its own, as the daemon gives each
 * workload); the child binds the rootfs, pivots into it and execs the
 * command. No /proc, no /dev, no /tmp, no sysfs, no loopback, no seccomp,
 * no record, no log: less than any of the daemon's sandboxes, so no
 * supervisor can start them all faster on this machine. With -m, the
 * mounts every one of the daemon's sandboxes has are made too (a fresh
 * /proc; /dev as a tmpfs with null, zero, full, random, urandom and tty
 * bound from the host's, a devpts instance and a /dev/shm tmpfs; a /tmp
 * tmpfs; a read-only sysfs) and loopback is brought up: still no init
 * beside the workload, no seccomp, no record and no log. The clones go
 * one after the other; the children build their roots in parallel. Prints
 * the seconds from the first clone to the last exec (each child's CLOEXEC
 * pipe reaching its end), then kills them all.
 * Usage: scale-floor [-m] COUNT FIRST_ID ROOTFS CMD...   (root only) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char stack[1 << 16];
static int release[2], started[2] = {-1, -1};
static char **cmd;
static const char *rootfs;
static int mounts;

/* In a child, its pipe carries the failure to the parent. */
static void die(const char *what) {
    perror(what);
    if (started[1] >= 0 && write(started[1], "!", 1) < 0) perror("report");
    _exit(125);
}

static void must_mount(const char *src, const char *target, const char *type, unsigned long flags, const char *data) {
    if (mount(src, target, type, flags, data)) die(target);
}

/* What every sandbox of the daemon's has, in the rootfs's own mount. */
static void own_mounts(void) {
    static const char *devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char path[64];
    must_mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    must_mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k");
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++) {
        snprintf(path, sizeof path, "dev/%s", devices[i]);
        close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
        char host[64];
        snprintf(host, sizeof host, "/dev/%s", devices[i]);
        must_mount(host, path, NULL, MS_BIND, NULL);
    }
    mkdir("dev/pts", 0755);
    must_mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    mkdir("dev/shm", 0755);
    must_mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    must_mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    must_mount("sysfs", "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr)) die("lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr)) die("lo up");
    close(s);
}


static int child(void *arg) {
    (void)arg;
    char c;
    close(release[1]);
    close(started[0]);
    if (read(release[0], &c, 1) != 1) die("release");
    if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) die("setresuid");
    /* Set after the ids change (which clears it): a sandbox dies with a
     * floor that dies (the parent was there to release it a moment ago). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL)) die("parent death signal");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("private");
    if (mount(rootfs, rootfs, NULL, MS_BIND, NULL)) die("bind");
    if (chdir(rootfs)) die("chdir");
    if (mounts) own_mounts();
    if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
    if (umount2(".", MNT_DETACH)) die("umount");
    execv(cmd[0], cmd);
    die("exec");
    return 0;
}

static pid_t *pids;
static int started_count;

/* In the parent: every child started so far is killed and reaped (none
 * may outlive a failed run: each holds a sandbox), then the exit. */
static void fail(const char *what) {
    if (errno) perror(what);
    else fprintf(stderr, "scale-floor: %s\n", what);
    for (int i = 0; i < started_count; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < started_count; i++) waitpid(pids[i], NULL, 0);
    exit(1);
}

static void write_file(pid_t pid, const char *what, const char *text) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, what);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) fail(path);
    close(fd);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-m") == 0) {
        mounts = 1;
        argv++;
        argc--;
    }
    char *end;
    long count = argc < 5 ? 0 : strtol(argv[1], &end, 10);
    if (count <= 0 || count > 100000 || *end) {
        fprintf(stderr, "usage: scale-floor [-m] COUNT FIRST_ID ROOTFS CMD...\n");
        return 2;
    }
    long first = strtol(argv[2], &end, 10);
    if (first < 0 || *end) {
        fprintf(stderr, "scale-floor: FIRST_ID must be a number\n");
        return 2;
    }
    rootfs = argv[3];
    cmd = argv + 4;
    /* The result goes to the caller's stdout; the children get /dev/null
     * there, so nothing they leave running holds the caller's pipe. */
    int result = fcntl(1, F_DUPFD_CLOEXEC, 3);
    int null = open("/dev/null", O_WRONLY);
    if (result < 0 || null < 0 || dup2(null, 1) < 0) fail("stdout");
    close(null);
    struct rlimit lim = {count + 64, count + 64};
    if (setrlimit(RLIMIT_NOFILE, &lim)) fail("setrlimit");
    pids = calloc(count, sizeof *pids);
    struct pollfd *ends = calloc(count, sizeof *ends);
    if (!pids || !ends) fail("calloc");
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | SIGCHLD;
    double t0 = now();
    for (int i = 0; i < count; i++) {
        if (pipe2(release, O_CLOEXEC) || pipe2(started, O_CLOEXEC)) fail("pipe");
        pid_t pid = clone(child, stack + sizeof stack, flags, NULL);
        if (pid < 0) fail("clone");
        pids[started_count++] = pid;
        close(release[0]);
        close(started[1]);
        started[1] = -1;
        char map[64];
        snprintf(map, sizeof map, "0 %ld 65536\n", first + (long)i * 65536);
        write_file(pid, "uid_map", map);
        write_file(pid, "gid_map", map);
        if (write(release[1], "x", 1) != 1) fail("release");
        close(release[1]);
        ends[i] = (struct pollfd){.fd = started[0], .events = POLLIN};
    }
    /* Each child's end of its pipe closes at its exec. */
    for (int left = count; left > 0;) {
        int n = poll(ends, count, 60000);
        if (n < 0 && errno != EINTR) fail("poll");
        errno = 0;
        if (n == 0) fail("no exec for 60 s");
        for (int i = 0; i < count; i++) {
            if (ends[i].fd >= 0 && ends[i].revents) {
                char c;
                if (read(ends[i].fd, &c, 1) != 0) fail("a sandbox did not exec");
                close(ends[i].fd);
                ends[i].fd = -1;
                left--;
            }
        }
    }
    double took = now() - t0;
    /* A child killed before its exec also closed its pipe: none may have. */
    errno = 0;
    for (int i = 0; i < count; i++)
        if (waitpid(pids[i], NULL, WNOHANG) != 0) fail("a sandbox ended before the count");
    dprintf(result, "%.3f\n", took);
    for (int i = 0; i < count; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < count; i++) waitpid(pids[i], NULL, 0);
    return 0;
}
