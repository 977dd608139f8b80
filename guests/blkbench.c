// blkbench: block I/O with O_DIRECT, timed inside the guest.
//
//   blkbench MODE DEVICE COUNT BS
//
// MODE is seqread, seqwrite, randread or randwrite. The sequential modes
// transfer COUNT bytes in BS-byte requests from offset 0 (what
// `dd if=DEVICE of=/dev/null bs=BS iflag=direct` does, minus dd's second
// syscall per block on /dev/null or /dev/zero, which costs ~30 us here);
// the random modes do COUNT requests of BS bytes at BS-aligned offsets
// drawn uniformly over the whole device from a fixed seed, so every VMM
// sees the same sequence. One request in flight at a time: each is a
// notification and (usually) an interrupt, the cost this test exposes.
// Writes are not followed by fsync: completion is what is timed, not the
// host's disk.
//
// Output, one line:
//   blkbench mode=M ops=N bytes=B seconds=X.XXXXXX
// Exit status: 0 ok, 1 I/O failure, 2 usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

static void usage(void)
{
	fprintf(stderr, "usage: blkbench seqread|seqwrite|randread|randwrite "
			"DEVICE COUNT BS\n"
			"  seq*: COUNT bytes in BS-byte requests; rand*: COUNT "
			"requests; BS a multiple of 512\n");
	exit(2);
}

// parse_size accepts a decimal number with an optional k, m or g suffix.
static int parse_size(const char *s, long long *out)
{
	char *end;

	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || v < 0)
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end != '\0')
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

// xorshift64*: fast, and the same sequence on every run.
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

int main(int argc, char **argv)
{
	if (argc != 5)
		usage();
	const char *mode = argv[1], *dev = argv[2];
	int write_mode, random_mode;
	if (strcmp(mode, "seqread") == 0)
		write_mode = 0, random_mode = 0;
	else if (strcmp(mode, "seqwrite") == 0)
		write_mode = 1, random_mode = 0;
	else if (strcmp(mode, "randread") == 0)
		write_mode = 0, random_mode = 1;
	else if (strcmp(mode, "randwrite") == 0)
		write_mode = 1, random_mode = 1;
	else
		usage();
	long long count, bs;
	if (parse_size(argv[3], &count) != 0 || parse_size(argv[4], &bs) != 0 ||
	    bs < 512 || bs % 512 != 0 || bs > (64 << 20))
		usage();

	int fd = open(dev, (write_mode ? O_WRONLY : O_RDONLY) | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "blkbench: open %s: %s\n", dev, strerror(errno));
		return 1;
	}
	uint64_t size;
	if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
		fprintf(stderr, "blkbench: BLKGETSIZE64 %s: %s\n", dev, strerror(errno));
		return 1;
	}
	uint64_t blocks = size / (uint64_t)bs;
	long long ops = random_mode ? count : count / bs;
	if (blocks == 0 || (!random_mode && (uint64_t)ops > blocks)) {
		fprintf(stderr, "blkbench: %s holds %llu bytes, too small for this job\n",
			dev, (unsigned long long)size);
		return 1;
	}

	// O_DIRECT wants the buffer aligned to the logical block size; a
	// page covers every device here.
	void *buf;
	if (posix_memalign(&buf, 4096, (size_t)bs) != 0) {
		fprintf(stderr, "blkbench: out of memory\n");
		return 1;
	}
	memset(buf, 0xa5, (size_t)bs); // also faults the pages in before timing

	double t0 = now();
	for (long long i = 0; i < ops; i++) {
		off_t off = (off_t)(random_mode ? next_random() % blocks : (uint64_t)i) * bs;
		ssize_t n = write_mode ? pwrite(fd, buf, (size_t)bs, off)
				       : pread(fd, buf, (size_t)bs, off);
		if (n != bs) {
			fprintf(stderr, "blkbench: %s at %lld: %s\n", mode, (long long)off,
				n < 0 ? strerror(errno) : "short transfer");
			return 1;
		}
	}
	double t1 = now();

	printf("blkbench mode=%s ops=%lld bytes=%lld seconds=%.6f\n", mode, ops,
	       ops * bs, t1 - t0);
	return 0;
}
