package vcpu

import (
	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/kvm"
)

// kindCache maps exits to exitstats rows without a map lookup or an
// allocation on the hot path: rows for each device are resolved once, the
// first time that device takes an exit, and kept in slices indexed by the
// bus range ID. Only the vCPU's own thread uses it.
type kindCache struct {
	reg            *exitstats.Registry
	byReason       [64]exitstats.Kind
	haveReason     [64]bool
	ioDev, mmioDev []exitstats.Kind
	ioUnclaimed    exitstats.Kind
	mmioUnclaimed  exitstats.Kind
	intr           exitstats.Kind
}

func (c *kindCache) init(reg *exitstats.Registry) {
	c.reg = reg
	c.ioUnclaimed = reg.Kind("IO:unclaimed")
	c.mmioUnclaimed = reg.Kind("MMIO:unclaimed")
	c.intr = reg.Kind(kvm.ExitIntr.String())
}

func (c *kindCache) reason(r kvm.ExitReason) exitstats.Kind {
	if c.reg == nil {
		return 0
	}
	if int(r) < len(c.byReason) {
		if !c.haveReason[r] {
			c.byReason[r] = c.reg.Kind(r.String())
			c.haveReason[r] = true
		}
		return c.byReason[r]
	}
	return c.reg.Kind(r.String())
}

func (c *kindCache) io(r *devices.Range) exitstats.Kind {
	if r == nil {
		return c.ioUnclaimed
	}
	return c.device(&c.ioDev, "IO:", r)
}

func (c *kindCache) mmio(r *devices.Range) exitstats.Kind {
	if r == nil {
		return c.mmioUnclaimed
	}
	return c.device(&c.mmioDev, "MMIO:", r)
}

// device returns the row of a bus range. The cache holds Kind+1 so that 0
// means "not resolved yet" even for KindOther (what a full registry hands
// out): a device is looked up once, never per exit.
func (c *kindCache) device(cache *[]exitstats.Kind, prefix string, r *devices.Range) exitstats.Kind {
	if c.reg == nil {
		return 0
	}
	if r.ID < len(*cache) {
		if k := (*cache)[r.ID]; k != 0 {
			return k - 1
		}
	} else {
		grown := make([]exitstats.Kind, r.ID+1)
		copy(grown, *cache)
		*cache = grown
	}
	k := c.reg.Kind(prefix + r.Name)
	(*cache)[r.ID] = k + 1
	return k
}
