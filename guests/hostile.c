// hostile: a guest that drives a virtio-pci function by hand, as a
// malicious driver would, to test that govmm survives it.
//
//   hostile ATTACK ROUNDS
//
// The function (found by PCI vendor/device ID) is unbound from Linux's
// virtio-pci driver; its BAR is mapped through sysfs
// (/sys/bus/pci/devices/*/resourceN), and its rings live in mlocked pages
// whose guest-physical addresses come from /proc/self/pagemap (root only,
// which PID 1's children are). ROUNDS repeats the attack; 0 repeats it
// until the program is killed (for "stop during an attack" tests).
//
// Attacks:
//   console-chain  virtio-console transmit: one chain of every descriptor
//                  in the table, each covering the largest guest RAM range
//                  (output amplification: the host must bound what one
//                  request prints)
//
// Output: "HOSTILE-START ATTACK" once the device is set up, one
// "HOSTILE-ROUND ATTACK N used=U status=S" line per round in which the
// device did not complete the work, and at the end
// "HOSTILE-DONE ATTACK TOKEN": TOKEN is 16 random hex digits drawn after
// the attack, so a host reading console output that may also hold copies
// of guest memory knows that line was printed afterwards.
// Exit status: 0 the attack ran, 1 setup failed, 2 usage.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

#ifndef GRND_INSECURE
#define GRND_INSECURE 4 // Linux 5.6: never blocks, fine for a token
#endif

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_BLK 0x1042
#define VIRTIO_CONSOLE 0x1043

// Status bits and common configuration offsets (virtio 1.2, 2.1 and 4.1.4.3).
#define ST_ACK 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8
#define ST_NEEDS_RESET 0x40

#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_MSIX 0x10
#define CC_STATUS 0x14
#define CC_QSELECT 0x16
#define CC_QSIZE 0x18
#define CC_QMSIX 0x1a
#define CC_QENABLE 0x1c
#define CC_QNOTIFYOFF 0x1e
#define CC_QDESC 0x20
#define CC_QDRIVER 0x28
#define CC_QDEVICE 0x30

#define F_INDIRECT (1ull << 28)
#define F_VERSION_1 (1ull << 32)

#define DESC_NEXT 1
#define DESC_WRITE 2
#define DESC_INDIRECT 4

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static void die(const char *what)
{
	fprintf(stderr, "hostile: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *what)
{
	fprintf(stderr, "hostile: %s\n", what);
	exit(1);
}

// A page of memory the device may use: locked, zeroed, with its
// guest-physical address.
struct page {
	void *va;
	uint64_t pa;
};

static int pagemap_fd = -1;

static uint64_t phys(void *va)
{
	uint64_t e;
	off_t off = (uintptr_t)va / PAGE * 8;
	if (pread(pagemap_fd, &e, 8, off) != 8)
		die("read /proc/self/pagemap");
	if (!(e >> 63))
		fail("page not present");
	uint64_t pfn = e & ((1ull << 55) - 1);
	if (pfn == 0)
		fail("pagemap hides PFNs (not root?)");
	return pfn * PAGE + (uintptr_t)va % PAGE;
}

static struct page page_alloc(void)
{
	struct page p;
	p.va = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
	if (p.va == MAP_FAILED)
		die("mmap page");
	if (mlock(p.va, PAGE) != 0)
		die("mlock");
	memset(p.va, 0, PAGE);
	p.pa = phys(p.va);
	return p;
}

// The device: its mapped BAR and where the structures are.
struct dev {
	volatile uint8_t *common;
	volatile uint8_t *notify;
	uint32_t notify_mult;
};

static volatile uint8_t *bars[6];
static size_t bar_sizes[6];

static volatile uint8_t *map_bar(const char *dir, int bar)
{
	if (bars[bar])
		return bars[bar];
	char path[512];
	snprintf(path, sizeof path, "%s/resource%d", dir, bar);
	int fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0)
		die(path);
	struct stat st;
	if (fstat(fd, &st) != 0)
		die("fstat resource");
	void *p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap resource");
	close(fd);
	bars[bar] = p;
	bar_sizes[bar] = st.st_size;
	return p;
}

static int read_hex(const char *path, unsigned *v)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int ok = fscanf(f, "%x", v) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

// find_device returns the sysfs directory of the first function with
// the given virtio PCI device ID.
static void find_device(unsigned devid, char *dir, size_t n)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	if (!d)
		die("/sys/bus/pci/devices");
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[512];
		unsigned vendor, device;
		snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (read_hex(p, &vendor) != 0 || vendor != VIRTIO_VENDOR)
			continue;
		snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/device", e->d_name);
		if (read_hex(p, &device) != 0 || device != devid)
			continue;
		snprintf(dir, n, "/sys/bus/pci/devices/%s", e->d_name);
		closedir(d);
		return;
	}
	fprintf(stderr, "hostile: no PCI device %04x:%04x\n", VIRTIO_VENDOR, devid);
	exit(1);
}

// take_device unbinds the function from its driver, turns on memory
// decoding and bus mastering, and finds the common and notify
// structures through the virtio vendor capabilities.
static struct dev take_device(unsigned devid)
{
	char dir[400], p[512];
	find_device(devid, dir, sizeof dir);
	snprintf(p, sizeof p, "%s/driver/unbind", dir);
	int fd = open(p, O_WRONLY);
	if (fd >= 0) {
		const char *name = strrchr(dir, '/') + 1;
		if (write(fd, name, strlen(name)) < 0)
			die("unbind");
		close(fd);
	}
	snprintf(p, sizeof p, "%s/config", dir);
	fd = open(p, O_RDWR);
	if (fd < 0)
		die(p);
	uint8_t cfg[256];
	if (pread(fd, cfg, sizeof cfg, 0) != sizeof cfg)
		die("read config");
	uint16_t cmd = cfg[4] | cfg[5] << 8;
	cmd |= 0x2 | 0x4; // memory space, bus master
	if (pwrite(fd, &cmd, 2, 4) != 2)
		die("write command");
	close(fd);

	struct dev d = {0};
	if (!(cfg[6] & 0x10))
		fail("no capability list");
	for (int at = cfg[0x34] & ~3, hops = 0; at && hops < 48; at = cfg[at + 1] & ~3, hops++) {
		if (at > 256 - 20 || cfg[at] != 0x09) // vendor specific
			continue;
		int type = cfg[at + 3], bar = cfg[at + 4];
		uint32_t off, mult;
		memcpy(&off, cfg + at + 8, 4);
		if (bar > 5)
			continue;
		volatile uint8_t *base = map_bar(dir, bar);
		if (off >= bar_sizes[bar])
			fail("capability offset outside the BAR");
		if (type == 1)
			d.common = base + off;
		if (type == 2) {
			memcpy(&mult, cfg + at + 16, 4);
			d.notify = base + off;
			d.notify_mult = mult;
		}
	}
	if (!d.common || !d.notify)
		fail("no common or notify capability");
	return d;
}

static void w8(struct dev *d, int off, uint8_t v) { *(volatile uint8_t *)(d->common + off) = v; }
static void w16(struct dev *d, int off, uint16_t v) { *(volatile uint16_t *)(d->common + off) = v; }
static void w32(struct dev *d, int off, uint32_t v) { *(volatile uint32_t *)(d->common + off) = v; }
static uint8_t r8(struct dev *d, int off) { return *(volatile uint8_t *)(d->common + off); }
static uint16_t r16(struct dev *d, int off) { return *(volatile uint16_t *)(d->common + off); }
static uint32_t r32(struct dev *d, int off) { return *(volatile uint32_t *)(d->common + off); }

// A split virtqueue in three locked pages.
struct vq {
	struct dev *dev;
	int index;
	uint16_t size;
	uint16_t notify_off;
	struct page desc, avail, used;
	uint16_t avail_idx; // next free slot in the available ring
};

static struct desc *descs(struct vq *q) { return q->desc.va; }
static volatile uint16_t *avail_ring(struct vq *q) { return (volatile uint16_t *)q->avail.va; }
static volatile uint16_t *used_idx(struct vq *q) { return (volatile uint16_t *)q->used.va + 1; }

// start resets the device and negotiates VERSION_1 (and indirect
// descriptors when offered).
static void start(struct dev *d)
{
	w8(d, CC_STATUS, 0);
	for (int i = 0; r8(d, CC_STATUS) != 0; i++)
		if (i > 1000000)
			fail("reset does not complete");
	w8(d, CC_STATUS, ST_ACK);
	w8(d, CC_STATUS, ST_ACK | ST_DRIVER);
	w32(d, CC_DFSELECT, 0);
	uint64_t f = r32(d, CC_DF);
	w32(d, CC_DFSELECT, 1);
	f |= (uint64_t)r32(d, CC_DF) << 32;
	if (!(f & F_VERSION_1))
		fail("no VERSION_1");
	f &= F_VERSION_1 | F_INDIRECT;
	w32(d, CC_GFSELECT, 0);
	w32(d, CC_GF, (uint32_t)f);
	w32(d, CC_GFSELECT, 1);
	w32(d, CC_GF, f >> 32);
	w8(d, CC_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
	if (!(r8(d, CC_STATUS) & ST_FEATURES_OK))
		fail("FEATURES_OK refused");
	w16(d, CC_MSIX, 0xffff);
}

static void w64(struct dev *d, int off, uint64_t v)
{
	w32(d, off, (uint32_t)v);
	w32(d, off + 4, v >> 32);
}

// setup_queue gives queue index its rings (each ring fits a page for
// queues up to 256 entries) and enables it.
static struct vq setup_queue(struct dev *d, int index)
{
	struct vq q = {.dev = d, .index = index};
	w16(d, CC_QSELECT, index);
	q.size = r16(d, CC_QSIZE);
	if (q.size == 0 || q.size > 256)
		fail("queue size");
	q.notify_off = r16(d, CC_QNOTIFYOFF);
	q.desc = page_alloc();
	q.avail = page_alloc();
	q.used = page_alloc();
	w16(d, CC_QMSIX, 0xffff);
	w64(d, CC_QDESC, q.desc.pa);
	w64(d, CC_QDRIVER, q.avail.pa);
	w64(d, CC_QDEVICE, q.used.pa);
	w16(d, CC_QENABLE, 1);
	return q;
}

static void driver_ok(struct dev *d)
{
	w8(d, CC_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
	if (!(r8(d, CC_STATUS) & ST_DRIVER_OK))
		fail("DRIVER_OK refused");
}

// publish makes head available (without notifying).
static void publish(struct vq *q, uint16_t head)
{
	avail_ring(q)[2 + q->avail_idx % q->size] = head;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	q->avail_idx++;
	avail_ring(q)[1] = q->avail_idx;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static void notify(struct vq *q)
{
	*(volatile uint16_t *)(q->dev->notify + q->notify_off * q->dev->notify_mult) = q->index;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

// wait_used waits up to secs for the used index to reach want, or for
// the device to ask for a reset; it returns 1 when it got there.
static int wait_used(struct vq *q, uint16_t want, double secs)
{
	double end = now() + secs;
	while (*used_idx(q) != want) {
		if (r8(q->dev, CC_STATUS) & ST_NEEDS_RESET)
			return 0;
		if (now() > end)
			return 0;
		usleep(1000);
	}
	return 1;
}

// largest_ram returns the largest "System RAM" range in /proc/iomem.
static void largest_ram(uint64_t *start, uint64_t *len)
{
	FILE *f = fopen("/proc/iomem", "r");
	if (!f)
		die("/proc/iomem");
	char line[256];
	*len = 0;
	while (fgets(line, sizeof line, f)) {
		uint64_t a, b;
		if (line[0] == ' ' || !strstr(line, "System RAM"))
			continue;
		if (sscanf(line, "%" SCNx64 "-%" SCNx64, &a, &b) != 2)
			continue;
		if (b - a + 1 > *len) {
			*start = a;
			*len = b - a + 1;
		}
	}
	fclose(f);
	if (*len == 0)
		fail("no System RAM in /proc/iomem (not root?)");
	if (*len > 0xffffffffu)
		*len = 0xffffffffu;
}

static void round_result(const char *attack, long round, struct vq *q)
{
	printf("HOSTILE-ROUND %s %ld used=%u status=%#x\n", attack, round, *used_idx(q), r8(q->dev, CC_STATUS));
	fflush(stdout);
}

// console_chain: every descriptor of the transmit queue in one chain,
// each covering the largest RAM range.
static void console_chain(const char *attack, long rounds)
{
	struct dev d = take_device(VIRTIO_CONSOLE);
	start(&d);
	setup_queue(&d, 0); // receiveq: the device needs both, given no buffers
	struct vq tx = setup_queue(&d, 1);
	driver_ok(&d);
	uint64_t ram = 0, len;
	largest_ram(&ram, &len);
	for (int i = 0; i < tx.size; i++) {
		descs(&tx)[i] = (struct desc){.addr = ram, .len = len,
			.flags = i + 1 < tx.size ? DESC_NEXT : 0, .next = i + 1};
	}
	printf("HOSTILE-START %s chain=%u ram=%#" PRIx64 "+%#" PRIx64 "\n", attack, tx.size, ram, len);
	fflush(stdout);
	for (long r = 0; rounds == 0 || r < rounds; r++) {
		publish(&tx, 0);
		notify(&tx);
		if (!wait_used(&tx, tx.avail_idx, 10))
			round_result(attack, r, &tx);
	}
}

static const struct {
	const char *name;
	void (*run)(const char *attack, long rounds);
} attacks[] = {
	{"console-chain", console_chain},
};

int main(int argc, char **argv)
{
	if (argc != 3)
		goto usage;
	char *end;
	long rounds = strtol(argv[2], &end, 10);
	if (*end || rounds < 0)
		goto usage;
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap_fd < 0)
		die("/proc/self/pagemap");
	for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
		if (strcmp(argv[1], attacks[i].name) != 0)
			continue;
		attacks[i].run(argv[1], rounds);
		uint64_t token;
		if (getrandom(&token, sizeof token, GRND_INSECURE) != sizeof token)
			die("getrandom");
		printf("HOSTILE-DONE %s %016" PRIx64 "\n", argv[1], token);
		return 0;
	}
usage:
	fprintf(stderr, "usage: hostile ATTACK ROUNDS\nattacks:");
	for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++)
		fprintf(stderr, " %s", attacks[i].name);
	fprintf(stderr, "\n");
	return 2;
}
