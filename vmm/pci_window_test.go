package vmm

import (
	"testing"

	"github.com/govmm/govmm/vmm/boot"
)

// The PCI MMIO window lies above low RAM whatever the size, starts at a
// 64 MiB boundary, and leaves room below the IOAPIC; the DSDT declares the
// window BARs are placed from.
func TestPCIMMIOBase(t *testing.T) {
	const K, M, G = 1 << 10, 1 << 20, 1 << 30
	for _, tc := range []struct{ size, want uint64 }{
		{512 * M, 3 * G},
		{3 * G, 3 * G},
		{3*G + 4*K, 3*G + 64*M},
		{3300 * M, 3*G + 256*M},
		{3584*M - 4*K, 3584 * M},
		{3584 * M, 3 * G},
		{4 * G, 3 * G},
		{8 * G, 3 * G},
	} {
		got := pciMMIOBase(tc.size)
		if got != tc.want {
			t.Errorf("pciMMIOBase(%dK) = %#x, want %#x", tc.size>>10, got, tc.want)
		}
		if low := boot.LowRAMTop(tc.size); got < low || got%pciMMIOAlign != 0 || got+256*M > pciMMIOEnd {
			t.Errorf("pciMMIOBase(%dK) = %#x: below low RAM's top %#x, unaligned, or too close to the IOAPIC", tc.size>>10, got, low)
		}
	}
}
