package vmm

import (
	"strings"
	"testing"

	"github.com/govmm/govmm/kvm"
)

// The refusal of a size just over what the physical address bits allow
// names the size asked for, not the limit itself: in whole MiB, 63 GiB +
// 4 KiB read as 64512M, the "at most 64512 MiB" of the same message.
func TestPhysBitsRefusalNamesTheSizeAsked(t *testing.T) {
	cpuid := []kvm.CPUIDEntry{{Function: cpuidAddrSizes, EAX: 36}}
	const limit = 63 << 30 // 64 GiB of addresses, 1 GiB of them the hole
	if err := checkPhysBits(cpuid, limit); err != nil {
		t.Fatalf("--mem 63G with 36 bits: %v", err)
	}
	err := checkPhysBits(cpuid, limit+4<<10)
	if err == nil {
		t.Fatal("--mem 63G+4K with 36 bits accepted")
	}
	t.Log(err)
	if strings.Contains(err.Error(), "--mem 64512M") || !strings.Contains(err.Error(), "66060292K") {
		t.Errorf("refusal %q does not name the size asked for (66060292K)", err)
	}
}
