/*
 * faultbench: a page-fault-heavy guest workload for govmm's guest RAM
 * benchmark (make bench-mem). It touches REGIONS regions of MIB MiB each,
 * one byte per 4 KiB page, keeping them all (so every page is new guest
 * RAM the host must back), then forks and execs /bin/true FORKS times.
 * Inside a guest every page fault traps to the host on PVM machines, and
 * the host's own faults on guest RAM are fewer with huge pages.
 *
 *   faultbench [REGIONS [MIB [FORKS]]]     defaults 5 64 100
 *
 * Prints one line: faultbench regions=5 mib=64 forks=100 touch_s=T fork_s=F
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long arg(int argc, char **argv, int i, long def)
{
	if (argc <= i)
		return def;
	char *end;
	long v = strtol(argv[i], &end, 10);
	if (*end || v < 0 || v > 100000) {
		fprintf(stderr, "faultbench: bad argument %s\n", argv[i]);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	long regions = arg(argc, argv, 1, 5), mib = arg(argc, argv, 2, 64), forks = arg(argc, argv, 3, 100);
	size_t size = (size_t)mib << 20;

	double t0 = now();
	for (long r = 0; r < regions; r++) {
		volatile char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			perror("faultbench: mmap");
			return 1;
		}
		for (size_t off = 0; off < size; off += 4096)
			p[off] = 1;
	}
	double t1 = now();
	for (long i = 0; i < forks; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("faultbench: fork");
			return 1;
		}
		if (pid == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		int st;
		if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "faultbench: child %d failed\n", (int)pid);
			return 1;
		}
	}
	double t2 = now();
	printf("faultbench regions=%ld mib=%ld forks=%ld touch_s=%.3f fork_s=%.3f\n", regions, mib, forks, t1 - t0, t2 - t1);
	return 0;
}
