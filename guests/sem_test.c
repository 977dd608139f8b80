// sem_test: producer/consumer hand-over through two POSIX semaphores.
//
//   sem_test [ITEMS [SPIN]]      (defaults 800000 and 2000)
//
// A producer and a consumer thread hand ITEMS items over, one at a time,
// through a one-slot buffer guarded by two unnamed semaphores: "filled"
// (the slot holds an item) and "freed" (the consumer has taken it). For each
// item the producer spins SPIN iterations of a busy loop, then posts; the
// consumer takes the item, frees the slot and blocks in sem_wait at the end
// of every loop because the producer is still spinning. Each item is thus
// a futex sleep and a cross-CPU wake-up: in a VM with two vCPUs a halted
// vCPU and a wake-up IPI, which is the cost this test exposes. If SPIN is
// shorter than a wake-up, the producer also sleeps on "freed" each item.
//
// Output, one line: sem_test items=N spin=S seconds=X.XXXXXX
// Exit status: 0 ok, 1 failure (including a lost or reordered item), 2 usage.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long items = 800000;
static long spin = 2000;

static sem_t filled; // posted by the producer: the slot holds an item
static sem_t freed;  // posted by the consumer: the slot may be refilled
static long slot;    // the item in flight; the semaphores order its accesses
static long consumer_errors;

// Both workers and main meet here so the clock covers only the hand-over,
// not thread creation (clone and stack faults are slow inside a guest).
static pthread_barrier_t start;

static void die(const char *what, int err)
{
	fprintf(stderr, "sem_test: %s: %s\n", what, strerror(err));
	exit(1);
}

// sem_wait returns EINTR if a signal arrives; nothing here installs
// handlers, but a debugger or a stop/continue can still interrupt it.
static void wait_sem(sem_t *s)
{
	while (sem_wait(s) != 0)
		if (errno != EINTR)
			die("sem_wait", errno);
}

static void *producer(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&start);
	for (long i = 0; i < items; i++) {
		// volatile keeps the compiler from folding the loop away.
		for (volatile long n = 0; n < spin; n++)
			;
		wait_sem(&freed);
		slot = i;
		if (sem_post(&filled) != 0)
			die("sem_post", errno);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&start);
	for (long i = 0; i < items; i++) {
		wait_sem(&filled);
		if (slot != i)
			consumer_errors++;
		if (sem_post(&freed) != 0)
			die("sem_post", errno);
	}
	return NULL;
}

// parse_count accepts a plain decimal number in [min, LONG_MAX].
static int parse_count(const char *s, long min, long *out)
{
	char *end;

	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min)
		return -1;
	*out = v;
	return 0;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	if (argc > 3 || (argc > 1 && parse_count(argv[1], 1, &items) != 0) ||
	    (argc > 2 && parse_count(argv[2], 0, &spin) != 0)) {
		fprintf(stderr, "usage: sem_test [ITEMS [SPIN]]  (ITEMS >= 1, "
				"SPIN >= 0; defaults 800000 2000)\n");
		return 2;
	}

	int err;
	if (sem_init(&filled, 0, 0) != 0 || sem_init(&freed, 0, 1) != 0)
		die("sem_init", errno);
	if ((err = pthread_barrier_init(&start, NULL, 3)) != 0)
		die("pthread_barrier_init", err);

	pthread_t prod, cons;
	if ((err = pthread_create(&cons, NULL, consumer, NULL)) != 0)
		die("pthread_create", err);
	if ((err = pthread_create(&prod, NULL, producer, NULL)) != 0)
		die("pthread_create", err);

	double t0 = now();
	pthread_barrier_wait(&start);
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);
	double t1 = now();

	if (consumer_errors != 0) {
		fprintf(stderr, "sem_test: %ld items arrived out of order\n",
			consumer_errors);
		return 1;
	}
	printf("sem_test items=%ld spin=%ld seconds=%.6f\n", items, spin, t1 - t0);
	return 0;
}
