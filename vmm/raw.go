package vmm

import (
	"fmt"

	"github.com/govmm/govmm/vmm/boot"
)

// rawIdentityMap is how much a long-mode raw guest sees identity-mapped:
// enough to reach MMIO addresses above its RAM.
const rawIdentityMap = 1 << 30

// loadRaw copies a raw guest into memory and points the boot CPU at it.
func (v *VM) loadRaw(r *RawGuest) error {
	dst, err := v.mem.Slice(r.LoadAddr, uint64(len(r.Code)))
	if err != nil {
		return fmt.Errorf("raw guest: %w", err)
	}
	copy(dst, r.Code)
	if r.LongMode {
		if err := boot.WriteGDT(v.mem.b); err != nil {
			return err
		}
		if err := boot.WritePageTables(v.mem.b, max(v.mem.Size(), rawIdentityMap)); err != nil {
			return err
		}
	}
	mode := realMode
	if r.LongMode {
		mode = longMode
	}
	return setupBootCPU(v.kcpus[0], r.LoadAddr, mode, 0)
}
