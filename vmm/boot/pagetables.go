package boot

import "fmt"

const (
	pteP   = 1 << 0 // present
	pteRW  = 1 << 1 // writable
	ptePS  = 1 << 7 // 2 MiB page (in a PD entry)
	gib    = 1 << 30
	pdSpan = 2 << 20 // memory one PD entry maps
)

// WritePageTables writes an identity map of [0, upTo) rounded up to whole
// GiB (at least 1 GiB, at most 4 GiB) with 2 MiB pages: one PML4 entry, one
// PDPT and a PD per GiB at PDAddr onwards. The 64-bit entry needs the kernel
// image, zero page and command line mapped; the kernel builds its own tables
// before it touches anything else, so upTo is the kernel's (and initrd's) end.
func WritePageTables(mem []byte, upTo uint64) error {
	n := (upTo + gib - 1) / gib
	if upTo > MaxPDPages*gib {
		return fmt.Errorf("page tables: identity map up to %#x exceeds the %d GiB they cover", upTo, MaxPDPages)
	}
	n = max(n, 1)
	end := uint64(PDAddr + MaxPDPages*pageSize)
	if uint64(len(mem)) < end {
		return fmt.Errorf("page tables: guest memory of %#x bytes ends below %#x", len(mem), end)
	}
	clear(mem[PML4Addr:end]) // stale PDs past n must not linger as PDPT targets
	le.PutUint64(mem[PML4Addr:], PDPTAddr|pteP|pteRW)
	for i := uint64(0); i < n; i++ {
		pd := PDAddr + i*pageSize
		le.PutUint64(mem[PDPTAddr+i*8:], pd|pteP|pteRW)
		for j := uint64(0); j < 512; j++ {
			le.PutUint64(mem[pd+j*8:], (i*gib+j*pdSpan)|pteP|pteRW|ptePS)
		}
	}
	return nil
}

// WriteGDT writes the flat GDT the 64-bit entry runs on: null, 64-bit code
// (CodeSelector), data (DataSelector) and a TSS descriptor (TSSSelector),
// which KVM wants present in TR even though nothing uses it.
func WriteGDT(mem []byte) error {
	if len(mem) < GDTAddr+GDTLimit+1 {
		return fmt.Errorf("GDT: guest memory of %#x bytes ends below %#x", len(mem), GDTAddr+GDTLimit+1)
	}
	for i, d := range [...]uint64{0, GDTCode64, GDTData, GDTTSS} {
		le.PutUint64(mem[GDTAddr+i*8:], d)
	}
	return nil
}
