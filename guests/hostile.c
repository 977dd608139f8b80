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
// Attacks (the block ones need a disk whose first sector starts with
// BLK_MAGIC, at least 1016 KiB):
//   console-chain  virtio-console transmit: one chain of every descriptor
//                  in the table, each covering the largest guest RAM range
//                  (output amplification: the host must bound what one
//                  request prints)
//   console-indirect  the same through one indirect table of 4096 such
//                  descriptors (2 TiB per request at 512 MiB if copied)
//   blk-reads      the whole virtio-blk ring of the largest legal READs
//   blk-reset      that ring, then status 0 while the device works on it
//   blk-bad        malformed requests (addresses outside RAM, bad sizes,
//                  looping chains, I/O past the end), each must be refused
//   notify-storm   notifications with nothing new, and for no queue
//   status-games   status and queue registers written out of order
//   blk-selffeed   a virtio-blk queue whose one request the device refills
//                  itself, for ever (the disk must be a selffeed disk:
//                  below); ROUNDS is ignored, and the program waits for
//                  the host to stop, pause or reset the machine
//   blk-selffeed-mmio  the same, notified by an MMIO exit, so that the
//                  device works on the notifying vCPU's thread
// After each block attack a legal read of sector 0 must find BLK_MAGIC.
//
// Output: "HOSTILE-START ATTACK" once the device is set up,
// "HOSTILE-FIRST-ROUND ATTACK" once the attack has run once, one
// "HOSTILE-ROUND ATTACK N ..." line per round in which the device did not
// complete the work, "HOSTILE-CASE ATTACK NAME status=S" for each blk-bad
// case (S -1: the device asked for a reset), "HOSTILE-BROKEN ..." when
// the device accepted a bad request or failed a legal one, and at the end
// "HOSTILE-DONE ATTACK TOKEN": TOKEN is 16 random hex digits drawn after
// the attack, so a host reading console output that may also hold copies
// of guest memory knows that line was printed afterwards.
// Exit status: 0 the attack ran and the device behaved, 1 setup failed or
// the device misbehaved, 2 usage.
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
	volatile uint8_t *device; // device-specific configuration
	uint32_t notify_mult;
	size_t notify_len;
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
			uint32_t len;
			memcpy(&mult, cfg + at + 16, 4);
			memcpy(&len, cfg + at + 12, 4);
			d.notify = base + off;
			d.notify_mult = mult;
			d.notify_len = len;
		}
		if (type == 4)
			d.device = base + off;
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
static void program_queue(struct vq *q)
{
	struct dev *d = q->dev;
	w16(d, CC_QSELECT, q->index);
	q->size = r16(d, CC_QSIZE);
	if (q->size == 0 || q->size > 256)
		fail("queue size");
	q->notify_off = r16(d, CC_QNOTIFYOFF);
	memset(q->desc.va, 0, PAGE);
	memset(q->avail.va, 0, PAGE);
	memset(q->used.va, 0, PAGE);
	q->avail_idx = 0;
	w16(d, CC_QMSIX, 0xffff);
	w64(d, CC_QDESC, q->desc.pa);
	w64(d, CC_QDRIVER, q->avail.pa);
	w64(d, CC_QDEVICE, q->used.pa);
	w16(d, CC_QENABLE, 1);
}

static struct vq setup_queue(struct dev *d, int index)
{
	struct vq q = {.dev = d, .index = index};
	q.desc = page_alloc();
	q.avail = page_alloc();
	q.used = page_alloc();
	program_queue(&q);
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

static void started(const char *attack)
{
	printf("HOSTILE-START %s\n", attack);
	fflush(stdout);
}

// first_round says the attack has run once: a test may stop govmm now.
static void first_round(const char *attack, long r)
{
	if (r == 0) {
		printf("HOSTILE-FIRST-ROUND %s\n", attack);
		fflush(stdout);
	}
}

static void round_result(const char *attack, long round, struct vq *q)
{
	printf("HOSTILE-ROUND %s %ld used=%u status=%#x\n", attack, round, *used_idx(q), r8(q->dev, CC_STATUS));
	fflush(stdout);
}

// console_open sets up the virtio-console with its receiveq (the device
// needs both queues, given no buffers) and returns its transmitq, with
// the largest guest RAM range in ram/len. The device is static: the
// queue keeps a pointer to it.
static struct vq console_open(uint64_t *ram, uint64_t *len)
{
	static struct dev d;
	d = take_device(VIRTIO_CONSOLE);
	start(&d);
	setup_queue(&d, 0);
	struct vq tx = setup_queue(&d, 1);
	driver_ok(&d);
	*ram = 0;
	largest_ram(ram, len);
	return tx;
}

// console_send makes descriptor 0 of tx the transmit request, rounds
// times (0: without end).
static void console_send(const char *attack, long rounds, struct vq *tx)
{
	for (long r = 0; rounds == 0 || r < rounds; r++) {
		publish(tx, 0);
		notify(tx);
		if (!wait_used(tx, tx->avail_idx, 10))
			round_result(attack, r, tx);
		first_round(attack, r);
	}
}

// console_chain: every descriptor of the transmit queue in one chain,
// each covering the largest RAM range.
static void console_chain(const char *attack, long rounds)
{
	uint64_t ram, len;
	struct vq tx = console_open(&ram, &len);
	for (int i = 0; i < tx.size; i++) {
		descs(&tx)[i] = (struct desc){.addr = ram, .len = len,
			.flags = i + 1 < tx.size ? DESC_NEXT : 0, .next = i + 1};
	}
	printf("HOSTILE-START %s chain=%u ram=%#" PRIx64 "+%#" PRIx64 "\n", attack, tx.size, ram, len);
	fflush(stdout);
	console_send(attack, rounds, &tx);
}

// contig_table finds npages physically contiguous pages among the pages of
// a locked anonymous region (the order the kernel mapped them in does not
// matter: the run is looked for among sorted PFNs) and returns the run's
// guest-physical address, with va[i] the virtual address of its page i.
// Freshly booted guests have long free runs; a region of 4096 pages that
// holds no 16 consecutive frames fails the attack loudly, not quietly.
#define CONTIG_REGION 4096
static uint64_t contig_table(size_t npages, uint8_t **va)
{
	static struct {
		uint64_t pfn;
		uint8_t *va;
	} frames[CONTIG_REGION];
	uint8_t *region = mmap(NULL, CONTIG_REGION * PAGE, PROT_READ | PROT_WRITE,
		MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
	if (region == MAP_FAILED)
		die("mmap contiguous region");
	if (mlock(region, CONTIG_REGION * PAGE) != 0)
		die("mlock contiguous region");
	for (size_t i = 0; i < CONTIG_REGION; i++) {
		frames[i].va = region + i * PAGE;
		frames[i].pfn = phys(frames[i].va) / PAGE;
	}
	// Insertion sort by PFN: 4096 entries, once.
	for (size_t i = 1; i < CONTIG_REGION; i++) {
		for (size_t j = i; j > 0 && frames[j - 1].pfn > frames[j].pfn; j--) {
			uint64_t p = frames[j].pfn;
			uint8_t *v = frames[j].va;
			frames[j] = frames[j - 1];
			frames[j - 1].pfn = p;
			frames[j - 1].va = v;
		}
	}
	size_t run = 1;
	for (size_t i = 1; i < CONTIG_REGION; i++) {
		run = frames[i].pfn == frames[i - 1].pfn + 1 ? run + 1 : 1;
		if (run == npages) {
			size_t first = i + 1 - npages;
			for (size_t k = 0; k < npages; k++) {
				va[k] = frames[first + k].va;
				memset(va[k], 0, PAGE);
			}
			return frames[first].pfn * PAGE;
		}
	}
	fail("no physically contiguous run for an indirect table");
	return 0;
}

// console_indirect: one transmit request through an indirect table of
// 4096 descriptors (govmm's limit), each covering the largest RAM range.
static void console_indirect(const char *attack, long rounds)
{
	enum { ENTRIES = 4096, PAGES = ENTRIES * sizeof(struct desc) / PAGE };
	uint64_t ram, len;
	struct vq tx = console_open(&ram, &len);
	uint8_t *va[PAGES];
	uint64_t table = contig_table(PAGES, va);
	const size_t per_page = PAGE / sizeof(struct desc);
	for (size_t i = 0; i < ENTRIES; i++) {
		struct desc *t = (struct desc *)va[i / per_page];
		t[i % per_page] = (struct desc){.addr = ram, .len = len,
			.flags = i + 1 < ENTRIES ? DESC_NEXT : 0, .next = i + 1};
	}
	descs(&tx)[0] = (struct desc){.addr = table, .len = ENTRIES * sizeof(struct desc), .flags = DESC_INDIRECT};
	printf("HOSTILE-START %s table=%u ram=%#" PRIx64 "+%#" PRIx64 "\n", attack, ENTRIES, ram, len);
	fflush(stdout);
	console_send(attack, rounds, &tx);
}

// A virtio-blk device with one queue and the pages its requests use.
#define BLK_HDR 16
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_SEGS 254 // the seg_max govmm advertises
#define BLK_MAGIC "GOVMM-HOSTILE-DISK"

struct blk {
	struct dev d;
	struct vq q;
	uint64_t capacity; // sectors
	struct page hdr, status, table;
	struct page data[BLK_SEGS];
};

static struct blk blk;

static void blk_restart(void)
{
	start(&blk.d);
	program_queue(&blk.q);
	driver_ok(&blk.d);
}

static void blk_open(void)
{
	blk.d = take_device(VIRTIO_BLK);
	if (!blk.d.device)
		fail("no device configuration");
	start(&blk.d);
	blk.q = setup_queue(&blk.d, 0);
	driver_ok(&blk.d);
	blk.capacity = *(volatile uint32_t *)blk.d.device | (uint64_t) * (volatile uint32_t *)(blk.d.device + 4) << 32;
	blk.hdr = page_alloc();
	blk.status = page_alloc();
	blk.table = page_alloc();
	for (int i = 0; i < BLK_SEGS; i++)
		blk.data[i] = page_alloc();
}

static void set_hdr(uint32_t type, uint64_t sector)
{
	memset(blk.hdr.va, 0, BLK_HDR);
	memcpy(blk.hdr.va, &type, 4);
	memcpy((uint8_t *)blk.hdr.va + 8, &sector, 8);
}

static void set_desc(struct desc *t, int i, uint64_t addr, uint32_t len, uint16_t flags)
{
	t[i] = (struct desc){.addr = addr, .len = len, .flags = flags, .next = i + 1};
}

// submit publishes head, notifies and waits for the device; it returns
// the status byte, or -1 when the device asked for a reset or never
// answered (it then restarts the device).
static int submit(uint16_t head)
{
	volatile uint8_t *st = blk.status.va;
	*st = 0xff;
	publish(&blk.q, head);
	notify(&blk.q);
	if (!wait_used(&blk.q, blk.q.avail_idx, 30)) {
		blk_restart();
		return -1;
	}
	return *st;
}

// legal_read checks that the device still serves a plain request: sector
// 0, which the test wrote BLK_MAGIC to.
static void legal_read(const char *attack)
{
	struct desc *t = descs(&blk.q);
	set_hdr(BLK_T_IN, 0);
	memset(blk.data[0].va, 0, PAGE);
	set_desc(t, 0, blk.hdr.pa, BLK_HDR, DESC_NEXT);
	set_desc(t, 1, blk.data[0].pa, 512, DESC_NEXT | DESC_WRITE);
	set_desc(t, 2, blk.status.pa, 1, DESC_WRITE);
	int st = submit(0);
	if (st != 0 || memcmp(blk.data[0].va, BLK_MAGIC, strlen(BLK_MAGIC)) != 0) {
		printf("HOSTILE-BROKEN %s: a legal read after the attack got status %d\n", attack, st);
		exit(1);
	}
}

// huge_read_table fills the indirect table with the largest legal READ:
// a header, seg_max pages of data, the status byte.
static void huge_read_table(void)
{
	struct desc *t = blk.table.va;
	set_hdr(BLK_T_IN, 0);
	set_desc(t, 0, blk.hdr.pa, BLK_HDR, DESC_NEXT);
	for (int i = 0; i < BLK_SEGS; i++)
		set_desc(t, 1 + i, blk.data[i].pa, PAGE, DESC_NEXT | DESC_WRITE);
	set_desc(t, 1 + BLK_SEGS, blk.status.pa, 1, DESC_WRITE);
}

// fill_ring makes every slot of the ring a huge READ through the table.
static void fill_ring(void)
{
	struct desc *t = descs(&blk.q);
	for (int i = 0; i < blk.q.size; i++)
		t[i] = (struct desc){.addr = blk.table.pa, .len = (BLK_SEGS + 2) * sizeof(struct desc), .flags = DESC_INDIRECT};
	for (int i = 0; i < blk.q.size; i++)
		publish(&blk.q, i);
}

static void need_capacity(uint64_t sectors)
{
	if (blk.capacity < sectors) {
		fprintf(stderr, "hostile: disk of %" PRIu64 " sectors, need %" PRIu64 "\n", blk.capacity, sectors);
		exit(1);
	}
}

// huge_reads fills the whole ring with the largest legal READs (each
// ~1 MiB through an indirect table), over and over. With reset, it writes
// status 0 while the device works on them: the reset must return and the
// device work again.
static void huge_reads(const char *attack, long rounds, int reset)
{
	blk_open();
	need_capacity(BLK_SEGS * PAGE / 512);
	huge_read_table();
	started(attack);
	for (long r = 0; rounds == 0 || r < rounds; r++) {
		fill_ring();
		notify(&blk.q);
		if (reset) {
			w8(&blk.d, CC_STATUS, 0);
			if (r8(&blk.d, CC_STATUS) != 0)
				round_result(attack, r, &blk.q);
			blk_restart();
		} else if (!wait_used(&blk.q, blk.q.avail_idx, 120)) {
			round_result(attack, r, &blk.q);
		} else if (*(volatile uint8_t *)blk.status.va != 0) {
			printf("HOSTILE-ROUND %s %ld status byte %u\n", attack, r, *(volatile uint8_t *)blk.status.va);
		}
		first_round(attack, r);
	}
	legal_read(attack);
}

static void blk_reads(const char *attack, long rounds) { huge_reads(attack, rounds, 0); }
static void blk_reset(const char *attack, long rounds) { huge_reads(attack, rounds, 1); }

// A malformed request: refused means a status byte other than OK, or the
// device asking for a reset; OK is a failure of the device.
struct bad {
	const char *name;
	int n;          // descriptors in the chain
	struct desc d[4];
};

// run_bad submits b and fails if the device accepted it; the first round
// says what each case got (-1: the device asked for a reset).
static void run_bad(const char *attack, const struct bad *b, long r)
{
	struct desc *t = descs(&blk.q);
	for (int i = 0; i < b->n; i++)
		t[i] = b->d[i];
	int st = submit(0);
	if (st == 0) {
		printf("HOSTILE-BROKEN %s: %s completed with status OK\n", attack, b->name);
		exit(1);
	}
	if (r == 0)
		printf("HOSTILE-CASE %s %s status=%d\n", attack, b->name, st);
}

// blk_bad: requests with bad addresses and sizes, and looping chains.
static void blk_bad(const char *attack, long rounds)
{
	blk_open();
	uint64_t ram = 0, len;
	largest_ram(&ram, &len);
	uint64_t end = ram + len;
	uint64_t h = blk.hdr.pa, s = blk.status.pa, d0 = blk.data[0].pa;
	const uint16_t N = DESC_NEXT, W = DESC_WRITE;
	const struct bad cases[] = {
		{"data-outside-ram", 3, {{h, BLK_HDR, N, 1}, {1ull << 44, PAGE, N | W, 2}, {s, 1, W, 0}}},
		{"data-across-ram-end", 3, {{h, BLK_HDR, N, 1}, {end - 512, PAGE, N | W, 2}, {s, 1, W, 0}}},
		{"data-at-top-of-address-space", 3, {{h, BLK_HDR, N, 1}, {~0ull - 511, PAGE, N | W, 2}, {s, 1, W, 0}}},
		{"header-outside-ram", 3, {{1ull << 44, BLK_HDR, N, 1}, {d0, PAGE, N | W, 2}, {s, 1, W, 0}}},
		{"short-header", 3, {{h, 8, N, 1}, {d0, PAGE, N | W, 2}, {s, 1, W, 0}}},
		{"empty-data", 3, {{h, BLK_HDR, N, 1}, {d0, 0, N | W, 2}, {s, 1, W, 0}}},
		{"data-over-size-max", 3, {{h, BLK_HDR, N, 1}, {ram, 2 << 20, N | W, 2}, {s, 1, W, 0}}},
		{"data-4GiB", 3, {{h, BLK_HDR, N, 1}, {ram, 0xffffffff, N | W, 2}, {s, 1, W, 0}}},
		{"loop-to-head", 3, {{h, BLK_HDR, N, 1}, {d0, PAGE, N | W, 2}, {s, 1, N | W, 0}}},
		{"loop-to-self", 3, {{h, BLK_HDR, N, 1}, {d0, PAGE, N | W, 1}, {s, 1, W, 0}}},
		{"next-outside-table", 2, {{h, BLK_HDR, N, 1}, {d0, PAGE, N | W, 0x7fff}}},
		{"indirect-loop", 1, {{0, 0, DESC_INDIRECT, 0}}}, // table filled below
		{"indirect-in-indirect", 1, {{0, 0, DESC_INDIRECT, 0}}},
		{"indirect-odd-length", 1, {{0, 17, DESC_INDIRECT, 0}}},
		{"read-past-end", 3, {{h, BLK_HDR, N, 1}, {d0, PAGE, N | W, 2}, {s, 1, W, 0}}},
		{"write-past-end", 3, {{h, BLK_HDR, N, 1}, {d0, PAGE, N, 2}, {s, 1, W, 0}}},
		{"partial-sector", 3, {{h, BLK_HDR, N, 1}, {d0, 100, N | W, 2}, {s, 1, W, 0}}},
	};
	started(attack);
	for (long r = 0; rounds == 0 || r < rounds; r++) {
		for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
			struct bad b = cases[i];
			struct desc *t = blk.table.va;
			set_hdr(BLK_T_IN, 0);
			if (strcmp(b.name, "indirect-loop") == 0) {
				// hdr -> data -> status -> data -> status ...
				t[0] = (struct desc){h, BLK_HDR, N, 1};
				t[1] = (struct desc){d0, PAGE, N | W, 2};
				t[2] = (struct desc){s, 1, N | W, 1};
				b.d[0].addr = blk.table.pa;
				b.d[0].len = 3 * sizeof(struct desc);
			} else if (strcmp(b.name, "indirect-in-indirect") == 0) {
				t[0] = (struct desc){blk.table.pa, 16, DESC_INDIRECT, 0};
				b.d[0].addr = blk.table.pa;
				b.d[0].len = sizeof(struct desc);
			} else if (strcmp(b.name, "indirect-odd-length") == 0) {
				b.d[0].addr = blk.table.pa;
			} else if (strcmp(b.name, "read-past-end") == 0) {
				set_hdr(BLK_T_IN, blk.capacity - 1);
			} else if (strcmp(b.name, "write-past-end") == 0) {
				memset(blk.data[0].va, 0xee, PAGE);
				set_hdr(BLK_T_OUT, blk.capacity - 1);
			}
			run_bad(attack, &b, r);
		}
		first_round(attack, r);
	}
	legal_read(attack);
}

// notify_storm: 10000 notifications with nothing new, notifications
// naming queues that do not exist, and writes all over the notify area.
static void notify_storm(const char *attack, long rounds)
{
	blk_open();
	started(attack);
	for (long r = 0; rounds == 0 || r < rounds; r++) {
		for (int i = 0; i < 10000; i++)
			notify(&blk.q);
		for (size_t off = 0; off + 2 <= blk.d.notify_len + 64 && off + 2 <= 0x1000; off += 2)
			*(volatile uint16_t *)(blk.d.notify + off) = (uint16_t)(off * 7919);
		for (int i = 0; i < 1000; i++)
			*(volatile uint16_t *)blk.d.notify = 0xffff - i;
		first_round(attack, r);
	}
	legal_read(attack);
}

// status_games: status writes out of order, queue registers changed at
// the wrong time, features changed after FEATURES_OK.
static void status_games(const char *attack, long rounds)
{
	blk_open();
	started(attack);
	struct dev *d = &blk.d;
	for (long r = 0; rounds == 0 || r < rounds; r++) {
		// DRIVER_OK with no FEATURES_OK, then FEATURES_OK with no features.
		w8(d, CC_STATUS, 0);
		w8(d, CC_STATUS, ST_ACK | ST_DRIVER | ST_DRIVER_OK);
		w8(d, CC_STATUS, ST_FEATURES_OK);
		// Every status value, each after a reset.
		for (int v = 1; v < 256; v++) {
			w8(d, CC_STATUS, 0);
			w8(d, CC_STATUS, v);
		}
		// A running device: queue registers rewritten, a queue enabled
		// twice, features rewritten, a queue that does not exist.
		blk_restart();
		w16(d, CC_QSELECT, 0);
		w64(d, CC_QDESC, 1ull << 44);
		w16(d, CC_QSIZE, 3);
		w16(d, CC_QENABLE, 1);
		w16(d, CC_QENABLE, 0);
		w32(d, CC_GFSELECT, 0);
		w32(d, CC_GF, 0xffffffff);
		w32(d, CC_GFSELECT, 7);
		w32(d, CC_GF, 0xffffffff);
		w16(d, CC_QSELECT, 0xffff);
		w16(d, CC_QSIZE, 0);
		w64(d, CC_QDESC, 0);
		w16(d, CC_QENABLE, 1);
		w16(d, CC_QMSIX, 0x1234);
		w16(d, CC_MSIX, 0x1234);
		// The ring must still be where it was: a legal read works.
		legal_read(attack);
		first_round(attack, r);
	}
}

// blk-selffeed: a queue of size 1 whose one request (an indirect chain)
// is a READ of one sector that the device scatters over the request's own
// header, naming the next sector, and over the available ring's flags
// and idx, making the request available again. On a selffeed disk, whose
// sector s holds the header "IN, sector s+1 mod 65536" and then the ring
// words "flags 1, idx s+2 mod 65536", the device serves requests for
// ever once notified, with no vCPU's help (found by a guest audit: a
// host stop, pause or reset then waited for it for ever). The
// notification is a 16-bit write (the ioeventfd, served by a notifier
// goroutine) or, with mmio, a 32-bit one (an MMIO exit, served on this
// vCPU's thread, which then never returns to the guest).
#define SELFFEED_SECTORS 65536
static void selffeed(const char *attack, int mmio)
{
	struct dev d = take_device(VIRTIO_BLK);
	start(&d);
	struct page p = page_alloc();
	uint8_t *va = p.va;
	const uint64_t desc = p.pa, avail = p.pa + 0x40, used = p.pa + 0x80, hdr = p.pa + 0x200,
		       status = p.pa + 0x300, scratch = p.pa + 0x400, table = p.pa + 0x800;
	w16(&d, CC_QSELECT, 0);
	w16(&d, CC_QSIZE, 1);
	if (r16(&d, CC_QSIZE) != 1)
		fail("queue size 1 refused");
	if (r16(&d, CC_QNOTIFYOFF) != 0)
		fail("queue 0 notifies at an offset");
	w16(&d, CC_QMSIX, 0xffff);
	w64(&d, CC_QDESC, desc);
	w64(&d, CC_QDRIVER, avail);
	w64(&d, CC_QDEVICE, used);
	w16(&d, CC_QENABLE, 1);
	driver_ok(&d);
	uint64_t sectors = *(volatile uint32_t *)d.device | (uint64_t) * (volatile uint32_t *)(d.device + 4) << 32;
	if (sectors < SELFFEED_SECTORS)
		fail("not a selffeed disk (65536 sectors)");
	struct desc *t = (struct desc *)(va + 0x800);
	t[0] = (struct desc){hdr, BLK_HDR, DESC_NEXT, 1};
	t[1] = (struct desc){hdr, BLK_HDR, DESC_NEXT | DESC_WRITE, 2};
	t[2] = (struct desc){avail, 4, DESC_NEXT | DESC_WRITE, 3};
	t[3] = (struct desc){scratch, 512 - BLK_HDR - 4, DESC_NEXT | DESC_WRITE, 4};
	t[4] = (struct desc){status, 1, DESC_WRITE, 0};
	*(struct desc *)va = (struct desc){table, 5 * sizeof(struct desc), DESC_INDIRECT, 0};
	memset(va + 0x200, 0, BLK_HDR); // IN, sector 0
	volatile uint16_t *av = (volatile uint16_t *)(va + 0x40);
	av[2] = 0; // ring[0]: head 0
	av[0] = 1; // no interrupts
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	av[1] = 1;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	started(attack);
	first_round(attack, 0);
	if (mmio)
		*(volatile uint32_t *)d.notify = 0;
	else
		*(volatile uint16_t *)d.notify = 0;
	for (;;)
		pause();
}

static void blk_selffeed(const char *attack, long rounds) { (void)rounds; selffeed(attack, 0); }
static void blk_selffeed_mmio(const char *attack, long rounds) { (void)rounds; selffeed(attack, 1); }

static const struct {
	const char *name;
	void (*run)(const char *attack, long rounds);
} attacks[] = {
	{"console-chain", console_chain},
	{"console-indirect", console_indirect},
	{"blk-reads", blk_reads},
	{"blk-reset", blk_reset},
	{"blk-bad", blk_bad},
	{"notify-storm", notify_storm},
	{"status-games", status_games},
	{"blk-selffeed", blk_selffeed},
	{"blk-selffeed-mmio", blk_selffeed_mmio},
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
