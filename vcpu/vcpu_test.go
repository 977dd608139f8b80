package vcpu

import (
	"fmt"
	"testing"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/kvm"
)

// The kind cache names rows by device and reason, resolves each device
// once, and keeps working when a bus range appears after the vCPU started.
func TestKindCache(t *testing.T) {
	reg := exitstats.NewRegistry()
	var c kindCache
	c.init(reg)
	bus := devices.NewBus("io")
	serial, err := bus.Register("serial", 0x3f8, 8, devices.NewDiscard(0))
	if err != nil {
		t.Fatal(err)
	}
	k := c.io(serial)
	if got := reg.Name(k); got != "IO:serial" {
		t.Errorf("row %q, want IO:serial", got)
	}
	if c.io(serial) != k {
		t.Error("the same device got a second row")
	}
	late, err := bus.Register("late", 0x500, 4, devices.NewDiscard(0))
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.Name(c.mmio(late)); got != "MMIO:late" {
		t.Errorf("row %q, want MMIO:late", got)
	}
	for _, tc := range []struct {
		kind exitstats.Kind
		want string
	}{
		{c.io(nil), "IO:unclaimed"},
		{c.mmio(nil), "MMIO:unclaimed"},
		{c.reason(kvm.ExitHLT), "HLT"},
		{c.reason(kvm.ExitReason(200)), "EXIT_200"},
		{c.intr, "INTR"},
	} {
		if got := reg.Name(tc.kind); got != tc.want {
			t.Errorf("row %q, want %q", got, tc.want)
		}
	}
}

// With statistics off there is no registry, and nothing is resolved.
func TestKindCacheWithoutStats(t *testing.T) {
	var c kindCache
	if c.reason(kvm.ExitHLT) != 0 || c.io(&devices.Range{Name: "x"}) != 0 {
		t.Error("a cache without a registry handed out rows")
	}
}

func TestStopReasonNames(t *testing.T) {
	for r, want := range map[StopReason]string{
		Stopped: "stopped", Halted: "halted", Shutdown: "shutdown (triple fault)",
		Reset: "reset", PowerOff: "power-off", Crashed: "crash", StopReason(99): "StopReason(99)",
	} {
		if r.String() != want {
			t.Errorf("StopReason(%d) = %q, want %q", int(r), r.String(), want)
		}
	}
}

// Once the registry is full, a new device shares the OTHER row, and the
// cache settles on it instead of asking the registry on every exit.
func TestKindCacheFullRegistry(t *testing.T) {
	reg := exitstats.NewRegistry()
	for i := 0; i < exitstats.MaxKinds; i++ {
		reg.Kind(fmt.Sprintf("row%d", i))
	}
	var c kindCache
	c.init(reg)
	r := &devices.Range{Name: "late", ID: 3}
	if k := c.io(r); k != exitstats.KindOther {
		t.Fatalf("row %q, want OTHER", reg.Name(k))
	}
	if allocs := testing.AllocsPerRun(100, func() { c.io(r) }); allocs != 0 {
		t.Errorf("%v allocations per exit to a device on the OTHER row", allocs)
	}
}
