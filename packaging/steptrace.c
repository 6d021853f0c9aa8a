// steptrace: runs PROGRAM, single-stepping it and every process it clones
// or forks, and prints each instruction of PROGRAM's executable that runs,
// once per process, in the order they first run:
//
//     PROCESS OFFSET
//
// PROCESS numbers the traced processes in the order they were first
// seen (0 is PROGRAM); OFFSET is the instruction's address less the
// executable's load address, in hex. A process that executes another
// program is let go. packaging/make-order turns this into
// packaging/paddock.order.
//
//     gcc -O2 -o steptrace packaging/steptrace.c
//     sudo ./steptrace PROGRAM ARGS... > trace
//
// Every instruction is a stop and a resumption through ptrace: about ten
// thousand instructions a second, two minutes for a `paddock run`.
#define _GNU_SOURCE
#ifndef __x86_64__
#error "steptrace reads x86_64's registers (packaging/paddock.order is x86_64's)"
#endif
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

// The most of the executable's image that is recorded, and of processes.
#define SPAN (32u << 20)
#define MAXPROC 64

static char exe[4096];

// Each traced process, numbered in the order it was first seen (0 is
// PROGRAM): where the executable is mapped in it, its lowest and highest
// address (a clone shares its parent's; an exec of paddock, the `__init`
// re-execution, maps it at another, randomized, address), and which of
// its instructions have run.
static struct proc { pid_t pid; uintptr_t base, limit; uint8_t *seen; } procs[MAXPROC];
static int nprocs;

static void find_image(struct proc *p) {
	char path[64], line[8192];
	p->base = p->limit = 0;
	snprintf(path, sizeof path, "/proc/%d/maps", p->pid);
	FILE *f = fopen(path, "r");
	if (!f) { perror(path); exit(1); }
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		char name[4096] = "";
		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &lo, &hi, name) < 3) continue;
		if (strcmp(name, exe) != 0) continue;
		if (!p->base || lo < p->base) p->base = lo;
		if (hi > p->limit) p->limit = hi;
	}
	fclose(f);
	if (!p->base) { fprintf(stderr, "steptrace: %s is not mapped in %d\n", exe, p->pid); exit(1); }
	if (p->limit - p->base > SPAN) { fprintf(stderr, "steptrace: %s is larger than %u bytes\n", exe, SPAN); exit(1); }
}

// pid's entry, made (its image read) the first time; its image read again
// when fresh (after an exec).
static struct proc *process(pid_t pid, int fresh) {
	for (int i = 0; i < nprocs; i++) {
		if (procs[i].pid != pid) continue;
		if (fresh) find_image(&procs[i]);
		return &procs[i];
	}
	if (nprocs == MAXPROC) { fprintf(stderr, "steptrace: more than %d processes\n", MAXPROC); exit(1); }
	struct proc *p = &procs[nprocs++];
	p->pid = pid;
	p->seen = calloc(SPAN / 8, 1);
	if (!p->seen) { perror("calloc"); exit(1); }
	find_image(p);
	return p;
}

static int runs_exe(pid_t pid) {
	char path[64], target[4096];
	snprintf(path, sizeof path, "/proc/%d/exe", pid);
	ssize_t n = readlink(path, target, sizeof target - 1);
	if (n < 0) return 0;
	target[n] = 0;
	return strcmp(target, exe) == 0;
}

static void record(pid_t pid) {
	struct user_regs_struct regs;
	if (ptrace(PTRACE_GETREGS, pid, 0, &regs) != 0) return;
	struct proc *p = process(pid, 0);
	if (regs.rip < p->base || regs.rip >= p->limit) return;  // the vDSO, another library
	uintptr_t off = regs.rip - p->base;
	if (p->seen[off >> 3] & (1u << (off & 7))) return;
	p->seen[off >> 3] |= 1u << (off & 7);
	printf("%d %lx\n", (int)(p - procs), (unsigned long)off);
}

int main(int argc, char **argv) {
	if (argc < 2) { fprintf(stderr, "usage: steptrace PROGRAM ARGS...\n"); return 2; }
	if (!realpath(argv[1], exe)) { perror(argv[1]); return 1; }
	pid_t child = fork();
	if (child < 0) { perror("fork"); return 1; }
	if (child == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		execv(argv[1], argv + 1);
		perror(argv[1]);
		_exit(127);
	}
	int status;
	if (waitpid(child, &status, 0) != child || !WIFSTOPPED(status)) { fprintf(stderr, "steptrace: the child did not stop\n"); return 1; }
	if (ptrace(PTRACE_SETOPTIONS, child, 0,
	           PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL) != 0) {
		perror("PTRACE_SETOPTIONS");
		return 1;
	}
	ptrace(PTRACE_CONT, child, 0, 0);
	int stepping = 0, failed = 0;
	unsigned long steps = 0;
	for (;;) {  // until no traced process is left (ECHILD)
		pid_t pid = waitpid(-1, &status, __WALL);
		if (pid < 0) {
			if (errno == EINTR) continue;
			if (errno == ECHILD) break;
			perror("waitpid");
			return 1;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			if (pid == child && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) failed = 1;
			continue;
		}
		if (!WIFSTOPPED(status)) continue;
		int sig = WSTOPSIG(status), event = status >> 16, deliver = 0;
		if (event == PTRACE_EVENT_EXEC) {
			if (!runs_exe(pid)) {  // the workload: not paddock's code any more
				ptrace(PTRACE_DETACH, pid, 0, 0);
				continue;
			}
			process(pid, 1);
			stepping = 1;
		} else if (event) {
			// a clone or fork: the new process starts traced, stopped by a SIGSTOP
		} else if (sig == SIGTRAP) {
			if (stepping) {
				record(pid);
				steps++;
			}
		} else if (sig != SIGSTOP) {
			deliver = sig;  // a signal for the program: pass it on
		}
		ptrace(stepping ? PTRACE_SINGLESTEP : PTRACE_CONT, pid, 0, deliver);
	}
	fprintf(stderr, "steptrace: %lu instructions stepped in %d processes\n", steps, nprocs);
	if (failed) fprintf(stderr, "steptrace: %s failed\n", argv[1]);
	return failed;
}
