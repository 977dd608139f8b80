package vmm

import (
	"regexp"
	"strconv"
	"testing"
)

// More RAM must not leave the guest with less: QEMU's pc machine keeps
// RAM of less than 3.5 GiB below the PCI hole (max-ram-below-4g
// 0xe0000000; only from 3.5 GiB on does it split at 3 GiB), so Linux
// never sees RAM above 4 GiB, and sets up no 64 MiB swiotlb bounce
// buffer. govmm split at 3 GiB whatever the size: --mem 3073M gave
// MemTotal 3013224 kB against 3080552 kB for --mem 3G (QEMU 7.2 -m 3300M:
// 3309928 kB, RAM 0x100000-0xce3fffff; govmm --mem 3300M: 3243624 kB).
// Found by an audit.
//
// A little less than --mem 3G is Linux's doing, not the layout's: the
// struct pages of each 128 MiB memory section RAM reaches into take a
// whole 2 MiB block of the vmemmap, so QEMU -M pc gives 3078512 kB for
// -m 3G+8K and 3079528 kB for -m 3073M, as govmm now does (3078508 kB
// for 3G+4K). The swiotlb cost 64 MiB; the test allows 4.
func TestRAMJustOver3GiBIsNotLost(t *testing.T) {
	const slack = 4 << 10 // kB
	memTotal := func(size uint64) uint64 {
		_, out, console := bootLinuxWith(t, "vmlinux", 1, "govmm.run=grep,-e,MemTotal,-e,System.RAM,/proc/meminfo,/proc/iomem", func(c *Config) { c.MemSize = size })
		m := regexp.MustCompile(`MemTotal: +(\d+) kB`).FindStringSubmatch(console)
		if out.Err != nil || m == nil {
			t.Fatalf("--mem %dK: ended %v (%v), no MemTotal; console:\n%s", size>>10, out.Reason, out.Err, console)
		}
		if top := ramTop(console); size < 3584<<20 && top != size {
			t.Errorf("--mem %dK: System RAM ends at %#x, want all of it below the hole, up to %#x; console:\n%s", size>>10, top, size, console)
		}
		kb, _ := strconv.ParseUint(m[1], 10, 64)
		return kb
	}
	base := memTotal(3 << 30)
	for _, size := range []uint64{3<<30 + 4<<10, 3073 << 20, 3300 << 20} {
		if kb := memTotal(size); kb+slack < base {
			t.Errorf("--mem %dK: MemTotal %d kB, more than %d kB less than the %d kB of --mem 3G", size>>10, kb, slack, base)
		}
	}
}

// ramTop is where the highest "System RAM" range of a /proc/iomem on the
// console ends, exclusive (0 for none).
func ramTop(console string) uint64 {
	var top uint64
	for _, m := range regexp.MustCompile(`(?m)\b[0-9a-f]+-([0-9a-f]+) : System RAM`).FindAllStringSubmatch(console, -1) {
		if end, err := strconv.ParseUint(m[1], 16, 64); err == nil {
			top = max(top, end+1)
		}
	}
	return top
}
