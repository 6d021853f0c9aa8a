/* The floors for bench/daemon.py's restart measure: the same command
 * restarted as fast as a bare loop can, with no supervisor.
 *
 * Bare (the first form): fork, execv, waitpid, again; no sandbox. Its
 * restart latency is what the command's own exit and start cost on this
 * machine: no supervisor can restart it faster.
 *
 * Sandboxed (-s): each run is cloned into new user, mount, pid, uts, ipc
 * and network namespaces and unshares a cgroup namespace, as the daemon's
 * sandbox of the measured workload does; the loop writes its id maps (65536 ids from FIRST_ID); the
 * child builds the root the daemon builds for that workload (the rootfs
 * read-only under an overlay whose tmpfs upper layer holds the mount point
 * /out, OUTDIR bound there; a fresh /proc; /dev as a tmpfs with null,
 * zero, full, random, urandom and tty bound from the host's, a devpts
 * instance and a /dev/shm tmpfs; a /tmp tmpfs; a read-only sysfs;
 * loopback up), pivots into it and execs the command as its PID 1. The
 * loop's waitpid returns once the sandbox's last process is gone (its
 * mount namespace torn down; network and user namespaces are freed
 * later, in the background). Still no init beside the command, no
 * seccomp filter, no cgroup, no record, no log and no event loop: what the
 * kernel's sandbox costs here, which no supervisor of that sandbox can
 * undercut.
 *
 * Two designs paddock does not have, as floors of the same kind (-p and
 * -k take -s's arguments):
 * - Prepared (-p): each run's sandbox is built while the run before it
 *   runs, and waits, its root built, for the loop's go. Its PID 1 is a
 *   minimal init: given the go, it forks the command, and when the
 *   command exits it reports the end on a pipe, then exits. The loop
 *   gives the next sandbox its go at that report, before the old
 *   sandbox is torn down. What a supervisor that keeps a spare sandbox
 *   ready for each workload could reach at best.
 * - Kept (-k): one sandbox for every run, its PID 1 forking the command
 *   again as soon as it exits, as a pod keeps its namespaces while its
 *   container restarts; no report to anyone. What a supervisor that
 *   keeps the sandbox across restarts could reach at best.
 *
 * Usage: restart-floor RUNS PROGRAM [ARG...]
 *        restart-floor -s|-p|-k ROOTFS OUTDIR FIRST_ID RUNS PROGRAM [ARG...]   (root only) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char stack[1 << 16];
static int release[2];
/* -p: the go (read by the init) and the end's report (written by it). */
static int go[2] = {-1, -1}, ended[2] = {-1, -1};
/* The design floored: 's' (a fresh sandbox per run), 'p' or 'k' (above). */
static char design;
/* -k: how many times the sandbox's PID 1 runs the command. */
static int kept_runs;
static char **cmd;
static const char *rootfs, *outdir;
/* The rootfs and OUTDIR as detached trees, cloned by the loop in the
 * host's mount namespace before each clone, as the daemon does (a plain
 * bind of the host's `/` from inside the user namespace is refused: it
 * has locked mounts beneath). */
static int rootfs_tree = -1, out_tree = -1;

static void die(const char *what) {
    perror(what);
    _exit(125);
}

static void must_mount(const char *src, const char *target, const char *type, unsigned long flags, const char *data) {
    if (mount(src, target, type, flags, data)) die(target);
}

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

static int tree_of(const char *path) {
    return (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | O_CLOEXEC);
}

static void move_mount_to(int tree, const char *target) {
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)) die(target);
}

static void must_mkdir(const char *path) {
    if (mkdir(path, 0755) && errno != EEXIST) die(path);
}

/* The root, as the daemon builds it for a read-only rootfs that lacks a
 * mount point: staged in a tmpfs over /tmp (in this mount namespace). */
static void build_root(void) {
    static const char *devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char path[64], host[64];
    must_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    must_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700");
    must_mkdir("/tmp/lower");
    move_mount_to(rootfs_tree, "/tmp/lower");
    must_mkdir("/tmp/upper");
    must_mkdir("/tmp/work");
    must_mkdir("/tmp/root");
    must_mkdir("/tmp/upper/out");
    must_mount("overlay", "/tmp/root", "overlay", 0,
               "lowerdir=/tmp/lower,upperdir=/tmp/upper,workdir=/tmp/work,userxattr");
    if (chdir("/tmp/root")) die("chdir");
    must_mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    must_mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k");
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++) {
        snprintf(path, sizeof path, "dev/%s", devices[i]);
        close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
        snprintf(host, sizeof host, "/dev/%s", devices[i]);
        must_mount(host, path, NULL, MS_BIND, NULL);
    }
    must_mkdir("dev/pts");
    must_mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    must_mkdir("dev/shm");
    must_mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    must_mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    must_mount("sysfs", "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
    move_mount_to(out_tree, "out");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr)) die("lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr)) die("lo up");
    close(s);
    must_mount(NULL, ".", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
    if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
    if (umount2(".", MNT_DETACH)) die("umount");
    if (chdir("/")) die("chdir /");
}

static int child(void *arg) {
    (void)arg;
    char c;
    close(release[1]);
    /* Armed again after the ids change, which clears it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL)) die("parent death signal");
    if (read(release[0], &c, 1) != 1) die("release");
    close(release[0]);
    if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) die("setresuid");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL)) die("parent death signal");
    if (unshare(CLONE_NEWCGROUP)) die("cgroup namespace");
    build_root();
    if (design == 's') {
        execv(cmd[0], cmd);
        die("exec");
    }
    if (design == 'p') {
        close(go[1]);
        close(ended[0]);
        if (read(go[0], &c, 1) != 1) die("go");
    }
    for (int i = 0; i < (design == 'k' ? kept_runs : 1); i++) {
        pid_t run = fork();
        if (run == 0) {
            execv(cmd[0], cmd);
            die("exec");
        }
        if (run < 0) die("fork");
        while (waitpid(run, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    if (design == 'p' && write(ended[1], "e", 1) != 1) die("report");
    _exit(0);
}

static void write_file(pid_t pid, const char *what, const char *text) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, what);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        perror(path);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        exit(1);
    }
    close(fd);
}

/* One run of the command in a sandbox of its own, waited for. */
static pid_t sandboxed(long first) {
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | SIGCHLD;
    if ((rootfs_tree = tree_of(rootfs)) < 0 || (out_tree = tree_of(outdir)) < 0) {
        perror("open_tree");
        exit(1);
    }
    if (pipe2(release, O_CLOEXEC)) {
        perror("pipe");
        exit(1);
    }
    pid_t pid = clone(child, stack + sizeof stack, flags, NULL);
    close(release[0]);
    close(rootfs_tree);
    close(out_tree);
    if (pid < 0) {
        perror("clone");
        exit(1);
    }
    char map[64];
    snprintf(map, sizeof map, "0 %ld 65536\n", first);
    write_file(pid, "uid_map", map);
    write_file(pid, "gid_map", map);
    if (write(release[1], "x", 1) != 1) perror("release");
    close(release[1]);
    return pid;
}

/* -p: a sandbox built and waiting for its go, and where it reports its run's end. */
struct prepared {
    pid_t pid;
    int go, ended;
};

static struct prepared prepare(long first) {
    if (pipe2(go, O_CLOEXEC) || pipe2(ended, O_CLOEXEC)) {
        perror("pipe");
        exit(1);
    }
    pid_t pid = sandboxed(first);
    close(go[0]);
    close(ended[1]);
    return (struct prepared){pid, go[1], ended[0]};
}

static void wait_for(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        perror("waitpid");
        exit(1);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 125) {
        fprintf(stderr, "restart-floor: the sandbox could not be built (above)\n");
        exit(1);
    }
}

/* -p: each run's sandbox is prepared while the one before runs, and
 * given its go when the one before reports its end. */
static int prepared_runs(int runs, long first) {
    struct prepared now = prepare(first);
    char c;
    if (write(now.go, "g", 1) != 1) die("go");
    for (int i = 1; i <= runs; i++) {
        struct prepared next = i < runs ? prepare(first) : (struct prepared){-1, -1, -1};
        if (read(now.ended, &c, 1) != 1) {
            wait_for(now.pid);
            fprintf(stderr, "restart-floor: a run's end was not reported\n");
            return 1;
        }
        if (next.pid > 0 && write(next.go, "g", 1) != 1) die("go");
        wait_for(now.pid);
        close(now.go);
        close(now.ended);
        now = next;
    }
    return 0;
}

int main(int argc, char **argv) {
    design = argc > 1 && argv[1][0] == '-' && argv[1][1] && strchr("spk", argv[1][1]) && !argv[1][2] ? argv[1][1] : 0;
    int sandbox = design != 0;
    long first = 0;
    if (sandbox) {
        char *end;
        if (argc < 7 || (first = strtol(argv[4], &end, 10)) < 0 || *end) {
            fprintf(stderr, "usage: restart-floor -s|-p|-k ROOTFS OUTDIR FIRST_ID RUNS PROGRAM [ARG...]\n");
            return 2;
        }
        rootfs = argv[2];
        outdir = argv[3];
        argv += 4;
        argc -= 4;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: restart-floor RUNS PROGRAM [ARG...]\n");
        return 2;
    }
    int runs = atoi(argv[1]);
    cmd = argv + 2;
    if (design == 'p') return prepared_runs(runs, first);
    if (design == 'k') {
        kept_runs = runs;
        wait_for(sandboxed(first));
        return 0;
    }
    for (int i = 0; i < runs; i++) {
        pid_t pid;
        if (sandbox) {
            pid = sandboxed(first);
        } else if ((pid = fork()) == 0) {
            execv(cmd[0], cmd);
            perror("execv");
            _exit(127);
        }
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (sandbox) {
            wait_for(pid);
        } else if (waitpid(pid, NULL, 0) < 0) {
            perror("waitpid");
            return 1;
        }
    }
    return 0;
}
