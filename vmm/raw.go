package vmm

import (
	"fmt"

	"github.com/govmm/govmm/vmm/boot"
)

// rawIdentityMap is how much a long-mode raw guest sees identity-mapped:
// all of the low 4 GiB the tables can cover, so that MMIO above its RAM,
// and the PCI hole below 4 GiB, are reachable whatever its size.
// It costs nothing: WritePageTables clears all of its page directories
// whatever it maps. (It was max(RAM below the hole, 1 GiB): a guest of
// more than 3 GiB could not reach the hole, found by an audit.)
const rawIdentityMap = boot.MaxPDPages << 30

// loadRaw copies a raw guest into memory and points the boot CPU at it.
func (v *VM) loadRaw(r *RawGuest) error {
	dst, err := v.mem.Slice(r.LoadAddr, uint64(len(r.Code)))
	if err != nil {
		return fmt.Errorf("raw guest: %w", err)
	}
	copy(dst, r.Code)
	if r.LongMode {
		if err := boot.WriteGDT(v.mem.low); err != nil {
			return err
		}
		// RAM above 4 GiB stays unmapped: the tables cover 4 GiB at
		// most, and the tiny guests live in low RAM.
		if err := boot.WritePageTables(v.mem.low, rawIdentityMap); err != nil {
			return err
		}
	}
	mode := realMode
	if r.LongMode {
		mode = longMode
	}
	return setupBootCPU(v.kcpus[0], r.LoadAddr, mode, 0)
}
