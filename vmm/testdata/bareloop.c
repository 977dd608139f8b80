// bareloop: the physical limit of a user-space port-I/O exit on this host.
// It runs the same real-mode guest as govmm's exit benchmark (N one-byte
// OUTs, then HLT) with nothing but a bare KVM_RUN loop, and prints the mean
// cost of one exit round trip. Built and run by BenchmarkPortIOExit.
//
// usage: bareloop N   (guest code is read from stdin)
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (2 << 20)
#define LOAD_ADDR 0x1000

static void die(const char *m) { perror(m); exit(1); }

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: bareloop N < guest.bin\n");
		return 2;
	}
	long n = atol(argv[1]);
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) die("KVM_CREATE_VM");
	uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) die("mmap");
	ssize_t len = read(0, mem + LOAD_ADDR, MEM_SIZE - LOAD_ADDR);
	if (len <= 0) die("read guest");
	struct kvm_userspace_memory_region r = {.slot = 0, .memory_size = MEM_SIZE, .userspace_addr = (uint64_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
	int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (cpu < 0) die("KVM_CREATE_VCPU");
	int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
	if (run == MAP_FAILED) die("mmap kvm_run");
	struct kvm_sregs s;
	if (ioctl(cpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
	s.cs.base = 0; s.cs.selector = 0;
	s.ds.base = s.es.base = s.ss.base = 0;
	if (ioctl(cpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = LOAD_ADDR, .rflags = 2};
	if (ioctl(cpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

	volatile uint8_t sink = 0;
	long exits = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (ioctl(cpu, KVM_RUN, 0) < 0) die("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO) {
			sink = *((uint8_t *)run + run->io.data_offset);
			exits++;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		fprintf(stderr, "unexpected exit %d\n", run->exit_reason);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
	if (exits != n) {
		fprintf(stderr, "saw %ld exits, want %ld\n", exits, n);
		return 1;
	}
	printf("%.1f\n", ns / exits);
	(void)sink;
	return 0;
}
