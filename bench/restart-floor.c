/* The floor for bench/daemon.py's restart measure: the same command
 * restarted as fast as a bare loop can (fork, execv, waitpid, again), with
 * no sandbox and no supervisor. Its restart latency is what the command's
 * own exit and start cost on this machine: no supervisor can restart it
 * faster.
 * Usage: restart-floor RUNS PROGRAM [ARG...] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: restart-floor RUNS PROGRAM [ARG...]\n");
		return 2;
	}
	int runs = atoi(argv[1]);
	for (int i = 0; i < runs; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			execv(argv[2], argv + 2);
			perror("execv");
			_exit(127);
		}
		if (waitpid(pid, NULL, 0) < 0) {
			perror("waitpid");
			return 1;
		}
	}
	return 0;
}
